"""A bounded, expiring in-memory cache of unwrapped data keys (see ADR 0101).

Unwrapping costs a key backend round trip; caching the data key of a subject for a while turns
batch detokenization into local AES-GCM. The vault caches each key as its ready ``AESGCM``
object (which holds the key), so a batch sets up no cipher per subject. Entries expire after
``ttl`` seconds, the least recently used go first when the cache is full, and :meth:`clear`
drops everything when the backend seals.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from typing import Generic, TypeVar

K = TypeVar("K")


class DekCache(Generic[K]):
    """Thread-safe LRU with TTL: subject id -> data key (``K``: the key's in-memory form)."""

    def __init__(self, max_size: int, ttl: float) -> None:
        self._max = max_size
        self._ttl = ttl
        self._data: OrderedDict[str, tuple[float, K]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, subject_id: str) -> K | None:
        """The cached key, or None when absent or expired."""
        with self._lock:
            entry = self._data.get(subject_id)
            if entry is None:
                return None
            expires, key = entry
            if expires < time.monotonic():
                del self._data[subject_id]
                return None
            self._data.move_to_end(subject_id)
            return key

    def get_many(self, subject_ids: list[str]) -> dict[str, K]:
        """The cached, unexpired keys among ``subject_ids`` (one lock for the batch)."""
        out: dict[str, K] = {}
        now = time.monotonic()
        with self._lock:
            data = self._data
            for subject_id in subject_ids:
                entry = data.get(subject_id)
                if entry is None:
                    continue
                if entry[0] < now:
                    del data[subject_id]
                    continue
                data.move_to_end(subject_id)
                out[subject_id] = entry[1]
        return out

    def put(self, subject_id: str, key: K) -> None:
        """Remember a key (no-op when the cache is disabled)."""
        if self._max <= 0 or self._ttl <= 0:
            return
        with self._lock:
            self._data[subject_id] = (time.monotonic() + self._ttl, key)
            self._data.move_to_end(subject_id)
            while len(self._data) > self._max:
                self._data.popitem(last=False)

    def discard(self, subject_ids: list[str]) -> None:
        """Forget keys (erase)."""
        with self._lock:
            for subject_id in subject_ids:
                self._data.pop(subject_id, None)

    def clear(self) -> None:
        """Forget every key (backend sealed or unreachable)."""
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)
