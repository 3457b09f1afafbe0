"""The objects every service of the server shares, built once per process."""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from healthcode.server.db.engine import Database
from healthcode.server.settings import ServerSettings

if TYPE_CHECKING:
    from healthcode.server.auth.sms import SmsSender
    from healthcode.server.codes.keystore import KeyStore
    from healthcode.vault.client import VaultClient


def load_or_create_secret(path: Path) -> bytes:
    """The server's 32-byte secret (HMAC keys for OTP/rate-limit keys and page tokens).

    Generated on first start into a 0600 file under the data directory; every replica must share
    it (mount the same file or set it through the secret store in production).
    """
    if path.exists():
        data = path.read_bytes()
        if len(data) != 32:
            raise RuntimeError(f"server secret {path} is corrupt (expected 32 bytes)")
        return data
    path.parent.mkdir(parents=True, exist_ok=True)
    data = secrets.token_bytes(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    return data


@dataclass
class Platform:
    """Shared state of one server process: settings, database, vault client, keys, SMS sender."""

    settings: ServerSettings
    db: Database
    vault: VaultClient
    secret: bytes
    #: Issuer signing keys, trust list and revocation list (``healthcode.server.codes``).
    keys: KeyStore
    #: Where login codes go (``healthcode.server.auth.sms``).
    sms: SmsSender
