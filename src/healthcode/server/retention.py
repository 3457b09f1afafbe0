"""Retention: delete what the platform no longer needs (PIPL storage limitation).

:func:`purge_expired` runs periodically in the server (and from ``healthcode`` commands) in one
unit of work. What it deletes:

======================== =====================================================================
passages                 ``occurred_at`` older than the passage retention period
health/travel declared   ``declared_at`` older than the declaration retention period
issued codes             ``expires_at`` in the past (online verification no longer needs them)
idempotency records      older than 2 days (clients retry within minutes)
device enrolments        used, or expired
auth sessions            expired (and past their refresh expiry), or revoked and expired
risk-list entries        expired (the rules no longer read them); an entry reserving the vault
                         subject of a listed person who never registered is deleted by
                         :func:`healthcode.server.identity.erase_expired_reservations` (run by
                         the server's housekeeping) once that subject is erased in the vault
rate-limit windows       windows that ended more than a day ago
======================== =====================================================================

Retention periods come from the ``Setting`` rows ``retention.passage_days`` and
``retention.declaration_days`` (AdminService.UpdateRetentionSettings); without them,
``ServerSettings.retention_days`` (default 28). A declaration that still drives a rule (a travel
declaration is read for 14 days) is within every allowed period, since periods are >= 1 day and
health declarations matter for 24 hours; a retention shorter than 14 days shortens travel rules
accordingly, which is the authority's choice.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import BigInteger, ColumnElement, and_, cast, delete, exists, or_
from sqlalchemy.orm import Session

from healthcode.server.admin.store import retention_days
from healthcode.server.auth.otp import purge_expired as purge_login_codes
from healthcode.server.codes.store import purge_expired_codes
from healthcode.server.db.base import utcnow
from healthcode.server.db.models import (
    AuthSession,
    DeviceEnrollment,
    IdempotencyRecord,
    Passage,
    Person,
    RateLimitCounter,
)
from healthcode.server.residents.models import HealthDeclaration, TravelDeclaration
from healthcode.server.settings import ServerSettings
from healthcode.server.status.models import RiskListEntry

IDEMPOTENCY_DAYS = 2
RATE_LIMIT_KEEP = dt.timedelta(days=1)
#: Window sizes in use (``ratelimit.hit(window_seconds=...)``: 1 minute and 1 hour; 1 day spare).
WINDOW_SIZES = (60, 3600, 86400)


def _count(result: Any) -> int:
    rowcount = getattr(result, "rowcount", 0)
    return int(rowcount) if rowcount and rowcount > 0 else 0


def _old_windows(now: dt.datetime) -> ColumnElement[bool]:
    """Rate-limit rows whose window ended more than :data:`RATE_LIMIT_KEEP` ago.

    Rows store ``epoch_seconds // window_seconds`` but not the size. Sizes differ by far more than
    the ages involved, so a row's size is the largest size ``s`` with ``number * s <= now``; the
    row is old when ``(number + 1) * s`` lies before the cut-off.
    """
    now_s = int(now.timestamp())
    cutoff_s = int((now - RATE_LIMIT_KEEP).timestamp())
    number = cast(RateLimitCounter.window_start, BigInteger)
    clauses = []
    for i, size in enumerate(WINDOW_SIZES):
        parts = [number * size <= now_s, (number + 1) * size < cutoff_s]
        if i + 1 < len(WINDOW_SIZES):
            parts.append(number * WINDOW_SIZES[i + 1] > now_s)
        clauses.append(and_(*parts))
    return or_(*clauses)


def purge_expired(
    session: Session, settings: ServerSettings, now: dt.datetime | None = None
) -> dict[str, int]:
    """Delete expired rows; returns how many rows of each kind were deleted."""
    now = now or utcnow()
    passage_days, declaration_days = retention_days(session, settings.retention_days)
    passage_cutoff = now - dt.timedelta(days=passage_days)
    declaration_cutoff = now - dt.timedelta(days=declaration_days)
    counts: dict[str, int] = {}

    counts["passages"] = _count(
        session.execute(delete(Passage).where(Passage.occurred_at < passage_cutoff))
    )
    counts["health_declarations"] = _count(
        session.execute(
            delete(HealthDeclaration).where(HealthDeclaration.declared_at < declaration_cutoff)
        )
    )
    counts["travel_declarations"] = _count(
        session.execute(
            delete(TravelDeclaration).where(TravelDeclaration.declared_at < declaration_cutoff)
        )
    )
    counts["issued_codes"] = purge_expired_codes(session, now)
    counts["login_codes"] = purge_login_codes(session, now=now)
    counts["idempotency_records"] = _count(
        session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.created_at < now - dt.timedelta(days=IDEMPOTENCY_DAYS)
            )
        )
    )
    counts["device_enrollments"] = _count(
        session.execute(
            delete(DeviceEnrollment).where(
                or_(DeviceEnrollment.used_at.is_not(None), DeviceEnrollment.expires_at < now)
            )
        )
    )
    counts["auth_sessions"] = _count(
        session.execute(
            delete(AuthSession).where(
                AuthSession.expires_at.is_not(None),
                AuthSession.expires_at < now,
                or_(
                    AuthSession.refresh_expires_at.is_(None),
                    AuthSession.refresh_expires_at < now,
                ),
            )
        )
    )
    # Entries reserving a subject that became no person wait for erase_expired_reservations,
    # which erases the subject in the vault first (ADR 0003, "Reserved subjects").
    counts["risk_list_entries"] = _count(
        session.execute(
            delete(RiskListEntry).where(
                RiskListEntry.expires_at < now,
                or_(
                    RiskListEntry.subject_id.is_(None),
                    exists().where(Person.id == RiskListEntry.subject_id),
                ),
            )
        )
    )
    counts["rate_limit_counters"] = _count(
        session.execute(delete(RateLimitCounter).where(_old_windows(now)))
    )
    return counts


__all__ = ["purge_expired"]
