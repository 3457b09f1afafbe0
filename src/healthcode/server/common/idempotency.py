"""Retry-safe writes: the first response for (caller, method, request_id) is stored in the same
transaction as the write and returned again for every retry.

Use inside a unit of work::

    def unit(session):
        def work() -> Resp:
            ... write ...
            return resp

        return idempotency.once(session, caller, METHOD, req, Resp, work)

(:func:`replay` and :func:`remember` are the two halves, for handlers that must check for a
replay before an expensive step outside the transaction, such as a vault call.)
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from typing import TypeVar

from google.protobuf.message import Message
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from healthcode.common.errors import FailedPrecondition, invalid
from healthcode.server.db.models import IdempotencyRecord

M = TypeVar("M", bound=Message)
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")


def check_request_id(request_id: str, field: str = "request_id", *, required: bool = False) -> None:
    """Validate a client request id (1-64 URL-safe characters)."""
    if not request_id:
        if required:
            raise invalid(field, "is required")
        return
    if not _REQUEST_ID.match(request_id):
        raise invalid(field, "must be 1-64 characters of A-Z a-z 0-9 . _ : -")


def _hash(request: Message) -> bytes:
    return hashlib.sha256(request.SerializeToString(deterministic=True)).digest()


def _take_turns(session: Session, caller_id: str, method: str, request_id: str) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256("\0".join((caller_id, method, request_id)).encode()).digest()
    session.execute(select(func.pg_advisory_xact_lock(int.from_bytes(digest[:8], signed=True))))


def replay(  # noqa: PLR0917 - the key (caller, method, request id), the request, the type
    session: Session,
    caller_id: str,
    method: str,
    request_id: str,
    request: Message,
    response_type: type[M],
) -> M | None:
    """The stored response for a retried request, or None for a first attempt.

    On PostgreSQL this first takes a transaction lock on the key, so attempts of one request
    that run at the same time take turns: a later one waits for the first to commit and then
    (READ COMMITTED: a new statement sees the commit) replays its answer instead of doing the
    work again and failing on the record's primary key. SQLite writers already take turns.
    """
    if not request_id:
        return None
    _take_turns(session, caller_id, method, request_id)
    record = session.get(IdempotencyRecord, (caller_id, method, request_id))
    if record is None:
        return None
    if record.request_hash != _hash(request):
        raise FailedPrecondition(
            "REQUEST_ID_REUSED", "request_id was already used for a different request"
        )
    response = response_type()
    response.ParseFromString(record.response)
    return response


def remember(  # noqa: PLR0917 - the key (caller, method, request id), request, response
    session: Session,
    caller_id: str,
    method: str,
    request_id: str,
    request: Message,
    response: Message,
) -> None:
    """Store the response of a first attempt (same transaction as the write)."""
    if not request_id:
        return
    session.add(
        IdempotencyRecord(
            caller_id=caller_id,
            method=method,
            request_id=request_id,
            request_hash=_hash(request),
            response=response.SerializeToString(deterministic=True),
        )
    )


def once(  # noqa: PLR0917 - the key (caller, method), the request, the response type, the work
    session: Session,
    caller_id: str,
    method: str,
    request: Message,
    response_type: type[M],
    work: Callable[[], M],
) -> M:
    """Replay the stored response of a retried request, or run ``work`` and remember its answer.

    ``request`` must have a ``request_id`` field (retry-safe writes all do).
    """
    request_id: str = getattr(request, "request_id")  # noqa: B009 - every caller's type has it
    stored = replay(session, caller_id, method, request_id, request, response_type)
    if stored is not None:
        return stored
    response = work()
    remember(session, caller_id, method, request_id, request, response)
    return response
