"""Fixed-window rate limits kept in the database, so they hold across server replicas.

Keys are hashes (never a phone number or an address in clear).
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from healthcode.common.errors import ResourceExhausted
from healthcode.server.db.models import RateLimitCounter


def hit(
    session: Session,
    key: str,
    *,
    limit: int,
    window_seconds: int,
    now: dt.datetime,
    reason: str = "RATE_LIMITED",
) -> None:
    """Count one event for ``key``; RESOURCE_EXHAUSTED when the window's limit is exceeded."""
    window = int(now.timestamp()) // window_seconds
    dialect = session.get_bind().dialect.name
    insert = pg_insert if dialect == "postgresql" else sqlite_insert
    stmt = insert(RateLimitCounter).values(key=key, window_start=window, count=1)
    stmt = stmt.on_conflict_do_update(
        index_elements=["key", "window_start"], set_={"count": RateLimitCounter.count + 1}
    )
    session.execute(stmt)
    count = session.get(RateLimitCounter, (key, window), populate_existing=True)
    if count is not None and count.count > limit:
        retry = window_seconds - int(now.timestamp()) % window_seconds
        raise ResourceExhausted(
            reason, f"too many requests; retry in {retry} s", metadata={"retry_after_s": str(retry)}
        )


def purge(session: Session, *, older_than_window: int) -> None:
    """Drop old windows (housekeeping)."""
    session.execute(
        delete(RateLimitCounter).where(RateLimitCounter.window_start < older_than_window)
    )
