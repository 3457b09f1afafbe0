"""The privacy vault: a separate gRPC service that tokenizes personal data.

Public surface: settings, the async client used by the platform server, and the entry points that
``healthcode up`` and ``healthcode vault`` use.
"""

from healthcode.vault.client import (
    DetokenizedItem,
    FieldType,
    Purpose,
    TokenizeItem,
    TokenResult,
    VaultClient,
)
from healthcode.vault.server import VaultServer, run_vault, serve
from healthcode.vault.settings import VaultSettings

__all__ = [
    "DetokenizedItem",
    "FieldType",
    "Purpose",
    "TokenResult",
    "TokenizeItem",
    "VaultClient",
    "VaultServer",
    "VaultSettings",
    "run_vault",
    "serve",
]
