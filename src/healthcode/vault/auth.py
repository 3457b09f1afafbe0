"""Caller authentication: service credentials (stored hashed) and optional mTLS identities.

A credential is ``hcv1.<id>.<secret>``: the id selects the row, the 256-bit secret is checked
against its SHA-256 in constant time (a slow hash adds nothing for random secrets). Clients send
it as ``authorization: Bearer <credential>`` metadata. Roles:

- ``platform``: the platform server (tokenize, detokenize under policy, lookup, mask, erase);
- ``security_officer``: the audit service;
- ``key_admin``: key rotation and rewrap.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
import threading
import time
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from sqlalchemy import Engine, insert, select, update

from healthcode.vault.models import credentials


class Role(StrEnum):
    """Caller roles."""

    PLATFORM = "platform"
    SECURITY_OFFICER = "security_officer"
    KEY_ADMIN = "key_admin"


@dataclass(frozen=True)
class Caller:
    """An authenticated caller."""

    name: str
    role: Role
    credential_id: str = ""


def _now_us() -> int:
    return time.time_ns() // 1000


def _hash(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("ascii")).digest()


def create_credential(engine: Engine, name: str, role: Role) -> str:
    """Create a credential and return its only plaintext copy."""
    cred_id = secrets.token_hex(6)
    secret = base64.urlsafe_b64encode(secrets.token_bytes(32)).decode("ascii").rstrip("=")
    with engine.begin() as conn:
        conn.execute(
            insert(credentials).values(
                id=cred_id,
                name=name,
                role=role.value,
                secret_hash=_hash(secret),
                created_at=_now_us(),
                revoked_at=None,
            )
        )
    return f"hcv1.{cred_id}.{secret}"


def revoke_credentials(
    engine: Engine, *, name: str | None = None, cred_id: str | None = None
) -> int:
    """Revoke by name or id; returns how many were revoked."""
    stmt = update(credentials).where(credentials.c.revoked_at.is_(None))
    if name is not None:
        stmt = stmt.where(credentials.c.name == name)
    if cred_id is not None:
        stmt = stmt.where(credentials.c.id == cred_id)
    with engine.begin() as conn:
        return conn.execute(stmt.values(revoked_at=_now_us())).rowcount


def write_credential_file(path: Path, credential: str) -> None:
    """Write a credential file readable only by its owner (0600)."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as handle:
        handle.write(credential + "\n")
    os.replace(tmp, path)
    os.chmod(path, 0o600)


def read_credential_file(path: Path) -> str:
    """Read a credential file written by :func:`write_credential_file`."""
    return path.read_text(encoding="ascii").strip()


def ensure_credential_file(engine: Engine, path: Path, name: str, role: Role) -> bool:
    """Create ``path`` with a fresh credential unless it holds a live one; True when created.

    A lost or stale file is replaced and the old credentials of that name are revoked.
    """
    if path.exists():
        try:
            if CredentialVerifier(engine).verify(read_credential_file(path)) is not None:
                return False
        except OSError:
            pass
    revoke_credentials(engine, name=name)
    write_credential_file(path, create_credential(engine, name, role))
    return True


class CredentialVerifier:
    """Checks bearer credentials; results are cached for a few seconds (revocation latency)."""

    def __init__(self, engine: Engine, cache_ttl: float = 5.0) -> None:
        self._engine = engine
        self._ttl = cache_ttl
        self._cache: dict[str, tuple[float, Caller | None]] = {}
        self._lock = threading.Lock()

    def verify(self, credential: str) -> Caller | None:
        """The caller a credential belongs to, or None."""
        parts = credential.split(".")
        if len(parts) != 3 or parts[0] != "hcv1" or len(parts[1]) != 12 or len(parts[2]) > 64:
            return None
        key = hashlib.sha256(credential.encode("utf-8", "replace")).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None and hit[0] > now:
                return hit[1]
        with self._engine.connect() as conn:
            row = conn.execute(select(credentials).where(credentials.c.id == parts[1])).first()
        caller: Caller | None = None
        if (
            row is not None
            and row.revoked_at is None
            and hmac.compare_digest(row.secret_hash, _hash(parts[2]) if parts[2].isascii() else b"")
        ):
            caller = Caller(name=row.name, role=Role(row.role), credential_id=row.id)
        with self._lock:
            if len(self._cache) > 10_000:
                self._cache.clear()
            self._cache[key] = (now + self._ttl, caller)
        return caller
