"""Retention purge deletes exactly the old rows (SQLite + PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import func, select

from healthcode.server.admin import store
from healthcode.server.auth.models import LoginCode
from healthcode.server.codes.models import IssuedCodeRecord
from healthcode.server.db.base import new_id
from healthcode.server.db.engine import Database
from healthcode.server.db.models import (
    AuthSession,
    DeviceEnrollment,
    IdempotencyRecord,
    Passage,
    RateLimitCounter,
)
from healthcode.server.residents.models import HealthDeclaration, TravelDeclaration
from healthcode.server.retention import purge_expired
from healthcode.server.settings import ServerSettings
from tests.server.status.helpers import (
    checkpoint,
    health,
    official,
    open_db,
    passage,
    person,
    travel,
)

NOW = dt.datetime(2022, 6, 1, 12, 0, tzinfo=dt.UTC)
D = dt.timedelta(days=1)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = open_db(database_url)
    yield database
    database.close()


def _count(s: Any, model: Any) -> int:
    return int(s.scalar(select(func.count()).select_from(model)) or 0)


def test_purge_deletes_exactly_the_old_rows(db: Database, tmp_path: Any) -> None:
    settings = ServerSettings(home=tmp_path, database_url="sqlite://", retention_days=28)
    with db.sessions.begin() as s:
        p = person(s)
        cp = checkpoint(s)
        passage(s, p, cp, NOW - 29 * D)
        keep_passage = passage(s, p, cp, NOW - 27 * D)
        health(s, p, NOW - 8 * D)
        health(s, p, NOW - 6 * D)
        travel(s, p, ["510402"], arrived=NOW - 10 * D)
        travel(s, p, ["510402"], arrived=NOW - 2 * D)
        store.set_retention_days(s, official(s), 28, 7, NOW)
        s.add_all(
            [
                IdempotencyRecord(
                    caller_id="a",
                    method="m",
                    request_id="old",
                    request_hash=b"x" * 32,
                    response=b"",
                    created_at=NOW - 3 * D,
                ),
                IdempotencyRecord(
                    caller_id="a",
                    method="m",
                    request_id="new",
                    request_hash=b"x" * 32,
                    response=b"",
                    created_at=NOW - D,
                ),
                DeviceEnrollment(
                    code_hash=b"1" * 32,
                    checkpoint_id=cp.id,
                    created_by="a",
                    expires_at=NOW - dt.timedelta(hours=1),
                ),
                DeviceEnrollment(
                    code_hash=b"2" * 32,
                    checkpoint_id=cp.id,
                    created_by="a",
                    expires_at=NOW + D,
                    used_at=NOW - dt.timedelta(hours=1),
                ),
                DeviceEnrollment(
                    code_hash=b"3" * 32, checkpoint_id=cp.id, created_by="a", expires_at=NOW + D
                ),
                AuthSession(id=new_id(), access_hash=b"a" * 32, expires_at=NOW - D),
                AuthSession(
                    id=new_id(),
                    access_hash=b"b" * 32,
                    expires_at=NOW - D,
                    refresh_expires_at=NOW + D,
                ),
                AuthSession(id=new_id(), access_hash=b"c" * 32, expires_at=None),
                LoginCode(
                    phone_ref="old", code_hash=b"h" * 32, sent_at=NOW - D, expires_at=NOW - D
                ),
                LoginCode(
                    phone_ref="new",
                    code_hash=b"h" * 32,
                    sent_at=NOW - dt.timedelta(minutes=1),
                    expires_at=NOW + dt.timedelta(minutes=4),
                ),
            ]
        )
        s.flush()
        for cti, expires in ((b"o" * 16, NOW - 2 * D), (b"n" * 16, NOW + D)):
            s.add(
                IssuedCodeRecord(
                    cti=cti,
                    person_id=p.id,
                    kind=1,
                    signed_color=1,
                    kid=b"k" * 8,
                    issued_by="a",
                    issued_at=expires - dt.timedelta(minutes=5),
                    expires_at=expires,
                )
            )
        minute_now = int(NOW.timestamp()) // 60
        hour_now = int(NOW.timestamp()) // 3600
        s.add_all(
            [
                RateLimitCounter(key="m-old", window_start=minute_now - 3 * 1440, count=1),
                RateLimitCounter(key="m-new", window_start=minute_now, count=1),
                RateLimitCounter(key="h-old", window_start=hour_now - 72, count=1),
                RateLimitCounter(key="h-new", window_start=hour_now - 1, count=1),
            ]
        )
    with db.sessions.begin() as s:
        counts = purge_expired(s, settings, NOW)
    assert counts["passages"] == 1
    assert counts["health_declarations"] == 1
    assert counts["travel_declarations"] == 1
    assert counts["idempotency_records"] == 1
    assert counts["device_enrollments"] == 2
    assert counts["auth_sessions"] == 1
    assert counts["rate_limit_counters"] == 2
    assert counts["issued_codes"] == 1
    assert counts["login_codes"] == 1
    with db.sessions.begin() as s:
        assert s.scalars(select(Passage.id)).all() == [keep_passage.id]
        assert _count(s, HealthDeclaration) == 1
        assert _count(s, TravelDeclaration) == 1
        assert _count(s, DeviceEnrollment) == 1
        assert _count(s, AuthSession) == 2
        assert sorted(s.scalars(select(RateLimitCounter.key)).all()) == ["h-new", "m-new"]
        assert s.scalars(select(IssuedCodeRecord.cti)).all() == [b"n" * 16]
        assert s.scalars(select(LoginCode.phone_ref)).all() == ["new"]
    with db.sessions.begin() as s:
        assert all(v == 0 for v in purge_expired(s, settings, NOW).values())
