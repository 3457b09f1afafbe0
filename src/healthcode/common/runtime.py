"""Process-level runtime settings of the long-running servers.

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

import gc


def freeze_startup_heap() -> int:
    """Collect once, then exclude every surviving object from later collections; returns how
    many objects were frozen."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


__all__ = ["freeze_startup_heap"]
