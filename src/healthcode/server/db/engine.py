"""Engine creation and the unit-of-work runner used by the asyncio gRPC services.

The gRPC services run on asyncio; database work is plain synchronous SQLAlchemy executed in a small
thread pool, one transaction per unit of work (:meth:`Database.run`). That keeps store code simple
and costs one thread hop per request. SQLite runs in WAL mode with a busy timeout; PostgreSQL goes
through psycopg 3.
"""

from __future__ import annotations

import asyncio
import functools
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
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="db")

    @classmethod
    def from_url(cls, url: str, *, threads: int = 8) -> Database:
        """Engine + runner for a URL."""
        return cls(create_db_engine(url, pool_size=threads), threads=threads)

    def run_sync(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run ``fn(session, *args)`` in one transaction, committing on success."""
        try:
            with self.sessions.begin() as session:
                return fn(session, *args, **kwargs)
        except OperationalError as exc:
            raise Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable") from exc

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Await ``fn(session, *args)`` run in one transaction on the pool."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._pool, functools.partial(self.run_sync, fn, *args, **kwargs)
        )

    def close(self) -> None:
        """Stop the pool and dispose of connections."""
        self._pool.shutdown(wait=True)
        self.engine.dispose()


__all__ = ["Database", "Session", "create_db_engine"]
