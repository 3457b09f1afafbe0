"""Build the configured key backend."""

from __future__ import annotations

from healthcode.vault.keys.base import KeyBackend
from healthcode.vault.settings import VaultSettings


def create_backend(settings: VaultSettings) -> KeyBackend:
    """The backend named by ``settings.backend`` (keys are created on first use)."""
    if settings.backend == "transit":
        from healthcode.vault.keys.transit import TransitBackend

        return TransitBackend.from_settings(settings)
    from healthcode.vault.keys.local import LocalBackend

    return LocalBackend.open(settings.effective_key_file)
