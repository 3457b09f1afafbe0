"""Key backends: where the key-encryption key and the blind-index key live.

``local`` keeps them in a 0600 key file under the data directory (the embedded default);
``transit`` keeps them in HashiCorp Vault / OpenBao transit, so they never enter this process.
"""

from healthcode.vault.keys.base import (
    BackendUnavailable,
    KeyBackend,
    KeyStatus,
    UnwrapFailure,
    WrappedKey,
)
from healthcode.vault.keys.factory import create_backend

__all__ = [
    "BackendUnavailable",
    "KeyBackend",
    "KeyStatus",
    "UnwrapFailure",
    "WrappedKey",
    "create_backend",
]
