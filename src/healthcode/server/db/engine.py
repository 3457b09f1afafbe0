"""Engine creation and the unit-of-work runner used by the asyncio gRPC services.

The gRPC services run on asyncio; database work is plain synchronous SQLAlchemy executed in a small
thread pool, one transaction per unit of work (:meth:`Database.run`). That keeps store code simple
and costs one thread hop per request. SQLite runs in WAL mode with a busy timeout; PostgreSQL goes
through psycopg 3.

SQLite has one writer at a time and every unit starts with ``BEGIN IMMEDIATE``; concurrent units
would queue inside SQLite's busy handler, which sleeps in steps of up to 100 ms (a 1 ms unit gets
a p99 of a second under load). So on SQLite every unit of this process first takes
:attr:`Database.write_lock` (waiters wake the moment it is free); the lock adds no serialisation
SQLite did not already impose. (SQLite is the single-process embedded default; replicas use
PostgreSQL, where the lock is None.) Batch writers (``verification.unit``) take the same lock.
"""

from __future__ import annotations

import asyncio
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import Session, sessionmaker

from healthcode.common.errors import Unavailable

P = ParamSpec("P")
T = TypeVar("T")


def create_db_engine(url: str, *, pool_size: int = 8) -> Engine:
    """Create an engine with the pragmas and pool settings the platform needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            from pathlib import Path

            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            pool_size=pool_size,
            max_overflow=pool_size,
        )

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            # Let SQLAlchemy own transactions (BEGIN IMMEDIATE below) instead of pysqlite.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Any) -> None:
            # Writers serialise at BEGIN instead of failing on lock upgrade mid-transaction.
            conn.exec_driver_sql("BEGIN IMMEDIATE")

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


class Database:
    """Runs units of work (one transaction each) in a thread pool for asyncio callers."""

    def __init__(self, engine: Engine, *, threads: int = 8) -> None:
        self.engine = engine
        self.sessions = sessionmaker(engine, expire_on_commit=False)
        self.dialect = engine.dialect.name
        #: Held around every SQLite transaction of this process (None on PostgreSQL).
        self.write_lock: threading.Lock | None = (
            threading.Lock() if self.dialect == "sqlite" else None
        )
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="db")
        self._closers: list[Callable[[], None]] = []

    @classmethod
    def from_url(cls, url: str, *, threads: int = 8) -> Database:
        """Engine + runner for a URL."""
        return cls(create_db_engine(url, pool_size=threads), threads=threads)

    def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(session, *args)`` in one transaction, committing on success."""
        lock = self.write_lock
        try:
            if lock is None:
                with self.sessions.begin() as session:
                    return fn(session, *args, **kwargs)
            with lock, self.sessions.begin() as session:
                return fn(session, *args, **kwargs)
        except OperationalError as exc:
            raise Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable") from exc

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await ``fn(session, *args)`` run in one transaction on the pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, functools.partial(self.run_sync, fn, *args, **kwargs)
        )

    async def run_before(
        self, before: Callable[[], Any], fn: Callable[..., T], *args: Any, **kwargs: Any
    ) -> T:
        """Like :meth:`run`, with ``before()`` (CPU work: signature checks) run first on the same
        worker thread, outside the transaction and the SQLite lock; its result is passed as
        ``fn``'s second argument (after the session). Still one thread hop."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, functools.partial(self._before_then, before, fn, args, kwargs)
        )

    def _before_then(
        self,
        before: Callable[[], Any],
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> T:
        return self.run_sync(fn, before(), *args, **kwargs)

    def on_close(self, closer: Callable[[], None]) -> None:
        """Call ``closer`` first in :meth:`close` (batch writers stop and return connections)."""
        self._closers.append(closer)

    def close(self) -> None:
        """Stop the pool and dispose of connections."""
        for closer in self._closers:
            closer()
        self._closers.clear()
        self._pool.shutdown(wait=True)
        self.engine.dispose()


__all__ = ["Database", "Session", "create_db_engine"]
