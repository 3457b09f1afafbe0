"""The key backend interface (synchronous: the service calls it from worker threads)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class BackendUnavailable(Exception):
    """The key backend cannot be used right now; ``reason`` is a stable UPPER_SNAKE code."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


class UnwrapFailure(Exception):
    """A wrapped key failed authentication (tampered or wrapped by another key)."""

    def __init__(self, index: int) -> None:
        super().__init__(f"wrapped key {index} failed authentication")
        self.index = index


@dataclass(frozen=True)
class WrappedKey:
    """A data key wrapped by the key-encryption key, with the KEK version that wrapped it."""

    ciphertext: str
    version: int


@dataclass(frozen=True)
class KeyStatus:
    """Versions of the key-encryption key."""

    current_version: int
    min_decryption_version: int


class KeyBackend(Protocol):
    """Wraps data keys and computes blind indexes; never returns the keys it holds."""

    name: str

    def check(self) -> None:
        """Raise :class:`BackendUnavailable` unless the backend can serve now."""

    def wrap(self, keys: list[bytes]) -> list[WrappedKey]:
        """Wrap data keys with the current KEK version."""

    def unwrap(self, wrapped: list[str]) -> list[bytes]:
        """Unwrap data keys; raises :class:`UnwrapFailure` naming the first bad one."""

    def rewrap(self, wrapped: list[str]) -> list[WrappedKey]:
        """Re-wrap data keys with the current KEK version."""

    def blind_index(self, messages: list[bytes]) -> list[bytes]:
        """HMAC-SHA256 of each message under the dedicated blind-index key (32 bytes each)."""

    def status(self) -> KeyStatus:
        """Current and minimum decryption versions of the KEK."""

    def rotate(self) -> KeyStatus:
        """Create a new KEK version and make it current."""

    def retire(self, min_decryption_version: int) -> KeyStatus:
        """Stop older KEK versions from decrypting."""

    def close(self) -> None:
        """Release connections."""
