"""Running the long-lived servers: :func:`serve_until_stopped` (start, serve, stop) and the
process-level :func:`freeze_startup_heap`.

:func:`freeze_startup_heap` is called once by ``healthcode server`` and ``healthcode vault``
after they serve. Everything allocated while starting (imported modules, SQLAlchemy metadata,
protobuf descriptors, gRPC objects, policy and key material) lives as long as the process, yet
CPython's cyclic collector walked all of it on every full (generation 2) collection: measured
in the vault under ``bench/vault_bench.py``, 16 such collections of 57-71 ms each in one run,
each one a stop-the-world pause for every request in flight. ``gc.freeze()`` moves those
objects to the permanent generation, which collections skip; the same run then spent 17.6 ms
in 17 full collections altogether. Objects are still freed by reference counting; only
reference cycles among the frozen start-up objects would stay, and those live for the whole
process anyway.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any, Protocol


def freeze_startup_heap() -> int:
    """Collect once, then exclude every surviving object from later collections; returns how
    many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


class Serving(Protocol):
    """A server with ``await start()`` (binds and serves) and ``await stop()``."""

    async def start(self) -> Any: ...

    async def stop(self) -> None: ...


async def serve_until_stopped(
    server: Serving,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    freeze_heap: bool = False,
) -> None:
    """Start ``server``, set ``ready``, serve until ``stop`` is set (or the task is cancelled),
    then stop it; ``freeze_heap`` (for a process that only serves) calls
    :func:`freeze_startup_heap` once serving."""
    try:
        await server.start()
        if freeze_heap:
            freeze_startup_heap()
        if ready is not None:
            ready.set()
        await (stop.wait() if stop is not None else asyncio.Event().wait())
    finally:
        await asyncio.shield(server.stop())


__all__ = ["Serving", "freeze_startup_heap", "serve_until_stopped"]
