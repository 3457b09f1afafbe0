"""Store functions of the codes domain (sync SQLAlchemy, run inside one unit of work)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from sqlalchemy import delete
from sqlalchemy.orm import Session

from healthcode.codes import HealthCodeClaims
from healthcode.server.codes.models import IssuedCodeRecord

#: Issued-code rows are kept this long after expiry (late offline uploads still resolve).
PURGE_GRACE = dt.timedelta(days=1)


def _at(seconds: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(seconds, tz=dt.UTC)


def remember_code(
    session: Session, claims: HealthCodeClaims, *, person_id: str, kid: bytes, issued_by: str
) -> IssuedCodeRecord:
    """Record an issued code by its ``cti`` (online verification finds the person by it)."""
    record = IssuedCodeRecord(
        cti=claims.code_id,
        person_id=person_id,
        kind=int(claims.kind),
        signed_color=int(claims.colour),
        kid=kid,
        issued_by=issued_by,
        issued_at=_at(claims.issued_at),
        expires_at=_at(claims.expires_at),
    )
    session.add(record)
    return record


def purge_expired_codes(session: Session, now: dt.datetime) -> int:
    """Delete issued-code rows that expired more than :data:`PURGE_GRACE` ago; return how many.

    Called by the retention housekeeping; revoked codes disappear from the revocation list when
    they expire anyway.
    """
    result = session.execute(
        delete(IssuedCodeRecord)
        .where(IssuedCodeRecord.expires_at < now - PURGE_GRACE)
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


def delete_person_codes(session: Session, person_ids: Iterable[str]) -> int:
    """Delete the issued-code rows of persons (erasure); return how many."""
    ids = list(person_ids)
    if not ids:
        return 0
    result = session.execute(
        delete(IssuedCodeRecord)
        .where(IssuedCodeRecord.person_id.in_(ids))
        .execution_options(synchronize_session=False)
    )
    return int(getattr(result, "rowcount", 0) or 0)


__all__ = ["PURGE_GRACE", "delete_person_codes", "purge_expired_codes", "remember_code"]
