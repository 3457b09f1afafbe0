"""The embedded default backend: key-encryption and blind-index keys in a 0600 JSON key file.

The file is created on first start. Rotation appends a KEK version and rewrites the file
atomically; a process that meets a wrapped key with a version it does not know re-reads the file,
so a rotation done by the CLI is picked up by a running server without a restart.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import threading
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from healthcode.vault.keys.base import KeyStatus, UnwrapFailure, WrappedKey

FORMAT = "healthcode-vault-local-keys/1"
_AAD = b"healthcode.vault.dek.v1"


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _write_private(path: Path, payload: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(payload, handle, indent=2, sort_keys=True)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    os.chmod(path, 0o600)


class LocalBackend:
    """Keys from a local file; suitable for one machine (see ADR 0101)."""

    name = "local"

    def __init__(self, path: Path, payload: dict[str, Any]) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._mtime = path.stat().st_mtime_ns
        self._load(payload)

    @classmethod
    def open(cls, path: Path) -> LocalBackend:
        """Open the key file, creating it with fresh keys when it does not exist."""
        if not path.exists():
            payload = {
                "format": FORMAT,
                "kek": {"1": _b64(os.urandom(32))},
                "current": 1,
                "min_decryption_version": 1,
                "bidx": _b64(os.urandom(32)),
            }
            _write_private(path, payload)
        mode = path.stat().st_mode & 0o777
        if mode & 0o077:
            os.chmod(path, 0o600)
        return cls(path, json.loads(path.read_text(encoding="utf-8")))

    def _refresh(self) -> None:
        """Re-read the file when another process (the CLI) changed it: rotation or retirement."""
        try:
            mtime = self._path.stat().st_mtime_ns
        except OSError:
            return
        if mtime != self._mtime:
            self._reload()

    def _load(self, payload: dict[str, Any]) -> None:
        if payload.get("format") != FORMAT:
            raise ValueError(f"{self._path}: not a {FORMAT} key file")
        self._payload = payload
        self._keks = {int(v): base64.b64decode(k) for v, k in payload["kek"].items()}
        self._current = int(payload["current"])
        self._min = int(payload["min_decryption_version"])
        self._bidx = base64.b64decode(payload["bidx"])

    def _reload(self) -> None:
        self._mtime = self._path.stat().st_mtime_ns
        self._load(json.loads(self._path.read_text(encoding="utf-8")))

    def check(self) -> None:
        """The local file is always available once opened."""

    def wrap(self, keys: list[bytes]) -> list[WrappedKey]:
        """AES-GCM with the current KEK; the output names its version."""
        with self._lock:
            self._refresh()
            version, kek = self._current, self._keks[self._current]
        aead = AESGCM(kek)
        out = []
        for key in keys:
            nonce = os.urandom(12)
            blob = nonce + aead.encrypt(nonce, key, _AAD)
            out.append(WrappedKey(f"local:v{version}:{_b64(blob)}", version))
        return out

    def _kek_for(self, version: int) -> bytes | None:
        with self._lock:
            if version not in self._keks or version < self._min:
                self._reload()
            if version < self._min:
                return None
            return self._keks.get(version)

    def unwrap(self, wrapped: list[str]) -> list[bytes]:
        """Unwrap with the version each wrapped key names."""
        with self._lock:
            self._refresh()
        out = []
        for index, text in enumerate(wrapped):
            try:
                _, ver, blob64 = text.split(":", 2)
                version = int(ver.removeprefix("v"))
                blob = base64.b64decode(blob64, validate=True)
            except (ValueError, TypeError) as exc:
                raise UnwrapFailure(index) from exc
            kek = self._kek_for(version)
            if kek is None or len(blob) < 28:
                raise UnwrapFailure(index)
            try:
                out.append(AESGCM(kek).decrypt(blob[:12], blob[12:], _AAD))
            except InvalidTag as exc:
                raise UnwrapFailure(index) from exc
        return out

    def rewrap(self, wrapped: list[str]) -> list[WrappedKey]:
        """Unwrap and wrap again with the current version."""
        return self.wrap(self.unwrap(wrapped))

    def blind_index(self, messages: list[bytes]) -> list[bytes]:
        """HMAC-SHA256 under the blind-index key (never the KEK)."""
        key = self._bidx
        return [hmac.new(key, m, hashlib.sha256).digest() for m in messages]

    def status(self) -> KeyStatus:
        """Versions, re-read from the file so CLI rotations are visible."""
        with self._lock:
            self._reload()
            return KeyStatus(self._current, self._min)

    def rotate(self) -> KeyStatus:
        """Add a KEK version and make it current."""
        with self._lock:
            self._reload()
            payload = dict(self._payload)
            version = max(self._keks) + 1
            payload["kek"] = {**payload["kek"], str(version): _b64(os.urandom(32))}
            payload["current"] = version
            _write_private(self._path, payload)
            self._load(payload)
            return KeyStatus(self._current, self._min)

    def retire(self, min_decryption_version: int) -> KeyStatus:
        """Delete KEK versions below ``min_decryption_version`` from the file."""
        with self._lock:
            self._reload()
            payload = dict(self._payload)
            floor = min(min_decryption_version, self._current)
            payload["kek"] = {v: k for v, k in payload["kek"].items() if int(v) >= floor}
            payload["min_decryption_version"] = floor
            _write_private(self._path, payload)
            self._load(payload)
            return KeyStatus(self._current, self._min)

    def close(self) -> None:
        """Nothing to release."""
