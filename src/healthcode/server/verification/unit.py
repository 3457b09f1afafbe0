"""Running the gate's units of work: plain units on the database pool, and the batch writer that
group-commits VerifyCode passages.

:func:`run_unit` is ``Database.run`` with an optional CPU step (signature checks) run first on the
same worker thread; the SQLite writer lock lives in :class:`~healthcode.server.db.engine.Database`
and covers every unit of the process.

:class:`BatchWriter` is the VerifyCode hot path (ADR 0005). Each request is queued for dedicated
writer threads; a writer takes every queued request (up to :attr:`BatchWriter.max_batch`), runs
their CPU step, then hands the whole batch to ONE batch function inside ONE transaction on a
connection the thread keeps (no pool checkout, no pre-ping), commits once, and only then wakes the
callers: every answer follows its durable commit, and many passages share one commit (and, on
PostgreSQL, one WAL flush with ``synchronous_commit`` on). The batch function does set-based work:
one query for all holders, one multi-row insert for all passages.

Failure isolation: the batch function returns a per-item outcome (a ServiceError for a request it
rejects; it rejects before it writes). A database error inside the shared transaction rolls it
back and the batch is re-run one item per transaction, so only the culprit fails.

SQLite: one writer thread, holding ``Database.write_lock`` per batch. PostgreSQL: up to
:data:`PG_WRITERS` writer threads, so one batch can wait for its commit while the next is built.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import structlog
from sqlalchemy import Connection
from sqlalchemy.exc import DBAPIError, OperationalError, SQLAlchemyError
from sqlalchemy.orm import Session

from healthcode.common.errors import ServiceError, Unavailable
from healthcode.server.db.engine import Database

T = TypeVar("T")
I = TypeVar("I")  # noqa: E741 - item
R = TypeVar("R")

log = structlog.get_logger("healthcode.verification.unit")

#: A writer thread without work for this long ends (a new one starts on demand).
IDLE_SECONDS = 5.0
#: Writer threads on PostgreSQL (SQLite has one writer at a time anyway).
PG_WRITERS = 2


async def run_unit(
    db: Database, fn: Callable[..., T], *args: Any, before: Callable[[], Any] | None = None
) -> T:
    """``await db.run(fn, *args)``; with ``before``, its result is ``fn``'s second argument
    (after the session), computed on the same worker thread first. One thread hop."""
    if before is None:
        return await db.run(fn, *args)
    return await db.run_before(before, fn, *args)


#: Per item: (True, result) or (False, exception).
Outcome = tuple[bool, Any]


@dataclass(slots=True)
class _Job(Generic[I]):
    item: I
    future: asyncio.Future[Any]
    loop: asyncio.AbstractEventLoop


def _resolve(jobs: list[_Job[Any]], outcomes: list[Outcome]) -> None:
    for job, (ok, value) in zip(jobs, outcomes, strict=True):
        if job.future.done():  # the caller was cancelled
            continue
        if ok:
            job.future.set_result(value)
        else:
            job.future.set_exception(value)


_STOP: Any = object()


class _Retry(Exception):
    """A database error inside a shared transaction: re-run the batch one item at a time."""


class BatchWriter(Generic[I, R]):
    """Group commit: many queued items handled by one batch function in one transaction.

    ``prepare(item)`` runs on the writer thread before the transaction (CPU work, e.g. signature
    checks; it must not raise). ``batch(connection, prepared_items)`` runs the items' transaction
    on the writer's own connection (:func:`session_transaction`, or one autocommit statement) and
    returns one :data:`Outcome` per item only after its commit; it must write only after every
    check that can reject an item, and may return ServiceErrors as outcomes (they do not roll
    the batch back). On SQLite it runs holding ``Database.write_lock``.
    """

    def __init__(
        self,
        db: Database,
        batch: Callable[[Connection, Sequence[Any]], list[Outcome]],
        *,
        prepare: Callable[[I], Any] | None = None,
        max_batch: int = 64,
        workers: int | None = None,
        autocommit: bool = False,
    ) -> None:
        self._db = db
        self._batch_fn = batch
        self._autocommit = autocommit and db.write_lock is None
        self._prepare = prepare
        self.max_batch = max_batch
        self._lock = db.write_lock
        self._workers_max = workers or (1 if self._lock is not None else PG_WRITERS)
        self._queue: queue.SimpleQueue[_Job[I]] = queue.SimpleQueue()
        self._workers = 0
        self._idle = 0
        self._state = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = False
        db.on_close(self.close)

    def close(self) -> None:
        """Stop the writer threads (after the queued work) and close their connections."""
        with self._state:
            self._closed = True
            threads, self._threads = self._threads, []
            for _ in threads:
                self._queue.put(_STOP)
        for thread in threads:
            thread.join(timeout=30)

    async def submit(self, item: I) -> R:
        """Queue ``item``; resolve with its result once its transaction has committed."""
        loop = asyncio.get_running_loop()
        job: _Job[I] = _Job(item, loop.create_future(), loop)
        self._queue.put(job)
        if self._idle == 0 and self._workers < self._workers_max:
            self._start_worker()
        result: R = await job.future
        return result

    def _start_worker(self) -> None:
        with self._state:
            if self._closed:
                raise Unavailable("SHUTTING_DOWN", "the server is stopping")
            if self._idle == 0 and self._workers < self._workers_max:
                self._workers += 1
                thread = threading.Thread(target=self._work, name="batch-writer", daemon=True)
                self._threads = [t for t in self._threads if t.is_alive()] + [thread]
                thread.start()

    # -- writer thread ------------------------------------------------------------------------

    def _work(self) -> None:
        connection: Connection | None = None
        try:
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
                    if first is _STOP:
                        self._workers -= 1
                        return
                jobs = [first]
                stop = False
                while len(jobs) < self.max_batch:
                    try:
                        job = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if job is _STOP:
                        stop = True
                        break
                    jobs.append(job)
                connection = self._run_jobs(connection, jobs)
                if stop:
                    with self._state:
                        self._workers -= 1
                    return
        finally:
            if connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()

    def _run_jobs(self, connection: Connection | None, jobs: list[_Job[I]]) -> Connection | None:
        prepare = self._prepare
        items = (
            [prepare(job.item) for job in jobs] if prepare is not None else [j.item for j in jobs]
        )
        try:
            if connection is None:
                connection = self._db.engine.connect()
                if self._autocommit:  # reset by the pool when the connection is returned
                    connection = connection.execution_options(isolation_level="AUTOCOMMIT")
            try:
                outcomes = self._transaction(connection, items)
            except _Retry:
                outcomes = [self._transaction(connection, [item], alone=True)[0] for item in items]
        except Exception as exc:  # the connection or the database failed: everyone gets it
            if isinstance(exc, OperationalError | DBAPIError) and connection is not None:
                with contextlib.suppress(Exception):
                    connection.close()
                connection = None
            error = _as_service_error(exc)
            outcomes = [(False, error)] * len(jobs)
        by_loop: dict[asyncio.AbstractEventLoop, tuple[list[_Job[I]], list[Outcome]]] = {}
        for job, outcome in zip(jobs, outcomes, strict=True):
            group = by_loop.setdefault(job.loop, ([], []))
            group[0].append(job)
            group[1].append(outcome)
        for loop, (group_jobs, group_outcomes) in by_loop.items():
            with contextlib.suppress(RuntimeError):  # the caller's loop has closed
                loop.call_soon_threadsafe(_resolve, group_jobs, group_outcomes)
        return connection

    def _transaction(
        self, connection: Connection, items: list[Any], *, alone: bool = False
    ) -> list[Outcome]:
        lock = self._lock
        if lock is not None:
            lock.acquire()
        try:
            return self._batch_fn(connection, items)
        except SQLAlchemyError as exc:
            if alone or len(items) == 1:
                return [(False, _as_service_error(exc))]
            raise _Retry from exc
        finally:
            if lock is not None:
                lock.release()


def session_transaction(connection: Connection) -> Session:
    """A session on the writer's connection; ``with session.begin():`` is one transaction."""
    return Session(bind=connection, expire_on_commit=False)


def _as_service_error(exc: BaseException) -> BaseException:
    if isinstance(exc, ServiceError):
        return exc
    if isinstance(exc, OperationalError):
        return Unavailable("DATABASE_UNAVAILABLE", "the database is unavailable")
    log.error("batch unit failed", error_type=type(exc).__name__)
    return exc


__all__ = ["BatchWriter", "Outcome", "run_unit", "session_transaction"]
