"""Running the gate's units of work: on SQLite, one writer at a time inside this process.

Every SQLite unit of work of the platform starts with ``BEGIN IMMEDIATE`` (see
``healthcode.server.db.engine``), so concurrent units from the thread pool queue up inside
SQLite's busy handler, which sleeps in steps of up to 100 ms: under load that turns a 1 ms unit
into a p99 of a second or more. Taking a process-wide lock before the transaction begins lets the
waiting threads queue on a lock instead (woken the moment it is free). PostgreSQL needs no lock.
(SQLite is the single-process embedded default; replicas use PostgreSQL.)
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import queue
import threading
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError, SQLAlchemyError

from healthcode.common.errors import ServiceError, Unavailable
from healthcode.server.db.engine import Database

T = TypeVar("T")

_locks: weakref.WeakKeyDictionary[Database, threading.Lock] = weakref.WeakKeyDictionary()
_guard = threading.RLock()  # group_committer() holds it while GroupCommitter() takes it again


def _lock_for(db: Database) -> threading.Lock | None:
    if db.engine.dialect.name != "sqlite":
        return None
    with _guard:
        lock = _locks.get(db)
        if lock is None:
            lock = _locks[db] = threading.Lock()
        return lock


def _unit(
    db: Database,
    lock: threading.Lock | None,
    before: Callable[[], Any] | None,
    fn: Callable[..., T],
    *args: Any,
) -> T:
    if before is not None:
        args = (before(), *args)
    if lock is None:
        return db.run_sync(fn, *args)
    with lock:
        return db.run_sync(fn, *args)


async def run_unit(
    db: Database, fn: Callable[..., T], *args: Any, before: Callable[[], Any] | None = None
) -> T:
    """``await db.run(fn, *args)``, serialised per process on SQLite; one thread hop.

    ``before`` (CPU work such as signature checks) runs on the same worker thread first, outside
    the lock and before the transaction begins; its result is passed as ``fn``'s second argument
    (after the session).
    """
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(
        db._pool,
        functools.partial(_unit, db, _lock_for(db), before, fn, *args),
    )


# ------------------------------------------------------------------------------------------------
# Group commit for the VerifyCode hot path


@dataclass(slots=True)
class _Job:
    fn: Callable[..., Any]
    args: tuple[Any, ...]
    before: Callable[[], Any] | None
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop
    outcome: tuple[bool, Any] | None = None


def _resolve(jobs: list[_Job]) -> None:
    for job in jobs:
        if job.future.done() or job.outcome is None:
            continue
        ok, value = job.outcome
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


class GroupCommitter:
    """Runs many small units of work of concurrent requests in one transaction (group commit).

    Each request still costs one thread hop: it is queued, a worker thread takes every queued
    unit (up to :attr:`max_batch`), runs their ``before`` steps (CPU: signature checks), then the
    units one after the other in ONE transaction and commits once, then wakes the callers. Units
    must raise only before they write (the VerifyCode unit does: its one write is the final
    passage insert). A unit failing with a database error rolls the batch back, and the batch is
    re-run one unit per transaction so that only the culprit fails. On SQLite one worker holds
    the per-process writer lock per batch; on PostgreSQL a few workers run batches in parallel.
    """

    def __init__(self, db: Database, *, max_batch: int = 16, workers: int | None = None) -> None:
        self._db = db
        self._lock = _lock_for(db)
        self.max_batch = max_batch
        self._workers_max = workers or (1 if self._lock is not None else 4)
        self._queue: queue.SimpleQueue[_Job] = queue.SimpleQueue()
        self._workers = 0
        self._idle = 0
        self._state = threading.Lock()

    async def run(
        self, fn: Callable[..., T], *args: Any, before: Callable[[], Any] | None = None
    ) -> T:
        """Queue ``fn(session, [before()], *args)``; resolve with its result or exception."""
        loop = asyncio.get_running_loop()
        job = _Job(fn, args, before, loop.create_future(), loop)
        self._queue.put(job)
        with self._state:
            if self._idle == 0 and self._workers < self._workers_max:
                self._workers += 1
                threading.Thread(target=self._work, name="gate-commit", daemon=True).start()
        result: T = await job.future
        return result

    def _work(self) -> None:
        while True:
            with self._state:
                self._idle += 1
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._state:
                    self._idle -= 1
                    self._workers -= 1
                return
            with self._state:
                self._idle -= 1
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    jobs.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            self._run_batch(jobs)

    def _run_batch(self, jobs: list[_Job]) -> None:
        ready: list[tuple[_Job, tuple[Any, ...]]] = []
        for job in jobs:
            args = job.args
            if job.before is not None:
                try:
                    args = (job.before(), *args)
                except Exception as exc:
                    job.outcome = (False, exc)
                    continue
            ready.append((job, args))
        try:
            if self._lock is None:
                self._batch(ready)
            else:
                with self._lock:
                    self._batch(ready)
        except _Retry:
            for job, args in ready:
                job.outcome = None
                self._single(job, args)
        except Exception as exc:
            error = (
                Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable")
                if isinstance(exc, OperationalError)
                else exc
            )
            for job, _ in ready:
                job.outcome = (False, error)
        by_loop: dict[asyncio.AbstractEventLoop, list[_Job]] = {}
        for job in jobs:
            by_loop.setdefault(job.loop, []).append(job)
        for loop, group in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                loop.call_soon_threadsafe(_resolve, group)

    def _batch(self, ready: list[tuple[_Job, tuple[Any, ...]]]) -> None:
        with self._db.sessions.begin() as session:
            for job, args in ready:
                try:
                    job.outcome = (True, job.fn(session, *args))
                except ServiceError as err:
                    job.outcome = (False, err)
                except SQLAlchemyError as exc:
                    if len(ready) == 1:
                        raise
                    raise _Retry from exc

    def _single(self, job: _Job, args: tuple[Any, ...]) -> None:
        try:
            if self._lock is None:
                job.outcome = (True, self._db.run_sync(job.fn, *args))
            else:
                with self._lock:
                    job.outcome = (True, self._db.run_sync(job.fn, *args))
        except Exception as exc:
            job.outcome = (False, exc)


class _Retry(Exception):
    """A unit failed inside a shared transaction: re-run the batch one unit at a time."""


#: A worker thread without work for this long ends (a new one starts on demand).
IDLE_SECONDS = 5.0

_committers: weakref.WeakKeyDictionary[Database, GroupCommitter] = weakref.WeakKeyDictionary()


def group_committer(db: Database) -> GroupCommitter:
    """The group committer of a database (one per Database object)."""
    with _guard:
        committer = _committers.get(db)
        if committer is None:
            committer = _committers[db] = GroupCommitter(db)
        return committer
