"""Database work of the AdminService: plain synchronous functions over a Session, each called in
one unit of work (``Database.run``) after the request was validated.

Every function that acts on behalf of an official writes an :class:`AuditEvent` in the same
transaction (actor, action, target id, purpose; never personal data), so an action and its
audit record commit or roll back together.
"""

# Store functions run through Database.run(fn, *args), which forwards positional arguments.
# ruff: noqa: PLR0917

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, delete, false, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from healthcode.common.errors import FailedPrecondition, NotFound, PermissionDenied
from healthcode.server.common.principal import Principal, Role
from healthcode.server.db.base import new_id
from healthcode.server.db.models import (
    Account,
    AuditEvent,
    AuthSession,
    Checkpoint,
    DeviceEnrollment,
    Passage,
    Person,
    Setting,
)
from healthcode.server.identity import listed_subjects
from healthcode.server.residents.models import Correction
from healthcode.server.status import rules
from healthcode.server.status.models import RiskArea, RiskListEntry, StatusChange

CITY_WIDE = frozenset({Role.HEALTH_AUTHORITY, Role.SECURITY_OFFICER, Role.PROVINCIAL})

PASSAGE_DAYS_KEY = "retention.passage_days"
DECLARATION_DAYS_KEY = "retention.declaration_days"


# --- audit and jurisdiction ---------------------------------------------------------------------


def audit(
    session: Session,
    principal: Principal,
    action: str,
    target: str = "",
    purpose: str = "",
    *,
    outcome: str = "OK",
    now: dt.datetime,
) -> None:
    """Record one official action (ids and purposes only, never personal data)."""
    session.add(
        AuditEvent(
            actor_id=principal.id,
            actor_role=principal.role.value,
            action=action,
            target=target[:64],
            purpose=purpose,
            outcome=outcome[:24],
            occurred_at=now,
        )
    )


def division_clause(
    principal: Principal, column: InstrumentedAttribute[str]
) -> ColumnElement[bool] | None:
    """The SQL form of :meth:`Principal.can_see_division`; None when everything is visible."""
    if principal.role in CITY_WIDE:
        return None
    code = principal.division_code
    if not code:
        return false()
    if code.endswith("00"):
        return column.startswith(code.rstrip("0")[:4])
    return column == code


def require_division(principal: Principal, division_code: str) -> None:
    """PERMISSION_DENIED when ``division_code`` is outside the caller's jurisdiction."""
    if not principal.can_see_division(division_code):
        raise PermissionDenied(
            "OUTSIDE_JURISDICTION", "the target is outside the caller's jurisdiction"
        )


def get_person(session: Session, principal: Principal, person_id: str) -> Person:
    """A person the caller may act on; NOT_FOUND / PERMISSION_DENIED otherwise."""
    person = session.get(Person, person_id)
    if person is None:
        raise NotFound("SUBJECT_NOT_FOUND", "no such subject")
    require_division(principal, person.division_code)
    return person


def person_by_token(session: Session, id_token: str) -> Person | None:
    """The person holding an ID-number token."""
    return session.execute(select(Person).where(Person.id_token == id_token)).scalar_one_or_none()


# --- checkpoints, accounts, devices ---------------------------------------------------------------


def create_checkpoint(
    session: Session,
    principal: Principal,
    name: str,
    division_code: str,
    location: str,
    now: dt.datetime,
) -> Checkpoint:
    """A new checkpoint in a division the caller administers."""
    require_division(principal, division_code)
    checkpoint = Checkpoint(
        id=new_id(), name=name, division_code=division_code, location=location, created_at=now
    )
    session.add(checkpoint)
    audit(session, principal, "CreateCheckpoint", checkpoint.id, now=now)
    session.flush()
    return checkpoint


def list_checkpoints(
    session: Session,
    principal: Principal,
    division_code: str,
    limit: int,
    cursor: dict[str, Any] | None,
    now: dt.datetime,
) -> tuple[list[Checkpoint], dict[str, Any] | None]:
    """Checkpoints visible to the caller, oldest first, keyset-paged by (created_at, id)."""
    stmt = select(Checkpoint)
    clause = division_clause(principal, Checkpoint.division_code)
    if clause is not None:
        stmt = stmt.where(clause)
    if division_code:
        stmt = stmt.where(Checkpoint.division_code == division_code)
    if cursor is not None:
        at = dt.datetime.fromisoformat(str(cursor["t"]))
        stmt = stmt.where(
            or_(
                Checkpoint.created_at > at,
                and_(Checkpoint.created_at == at, Checkpoint.id > str(cursor["i"])),
            )
        )
    rows = list(
        session.execute(stmt.order_by(Checkpoint.created_at, Checkpoint.id).limit(limit + 1))
        .scalars()
        .all()
    )
    audit(session, principal, "ListCheckpoints", division_code, now=now)
    if len(rows) > limit:
        last = rows[limit - 1]
        return rows[:limit], {"t": last.created_at.isoformat(), "i": last.id}
    return rows, None


def get_checkpoint(session: Session, principal: Principal, checkpoint_id: str) -> Checkpoint:
    """A checkpoint in the caller's jurisdiction."""
    checkpoint = session.get(Checkpoint, checkpoint_id)
    if checkpoint is None:
        raise NotFound("CHECKPOINT_NOT_FOUND", "no such checkpoint")
    require_division(principal, checkpoint.division_code)
    return checkpoint


def create_device_enrollment(
    session: Session,
    principal: Principal,
    checkpoint_id: str,
    code_hash: bytes,
    expires_at: dt.datetime,
    now: dt.datetime,
) -> None:
    """Store a one-time enrolment code (its SHA-256 only) for a checkpoint of the caller."""
    get_checkpoint(session, principal, checkpoint_id)
    session.add(
        DeviceEnrollment(
            code_hash=code_hash,
            checkpoint_id=checkpoint_id,
            created_by=principal.id,
            expires_at=expires_at,
        )
    )
    audit(session, principal, "CreateDeviceEnrollment", checkpoint_id, now=now)


def create_service_account(
    session: Session,
    principal: Principal,
    role: Role,
    name: str,
    access_hash: bytes,
    now: dt.datetime,
) -> str:
    """A partner/provincial account with a non-expiring credential (stored hashed)."""
    account = Account(id=new_id(), role=role.value, display_name=name, created_at=now)
    session.add(account)
    session.flush()
    session.add(
        AuthSession(access_hash=access_hash, account_id=account.id, expires_at=None, created_at=now)
    )
    audit(session, principal, "CreateServiceAccount", account.id, now=now)
    return account.id


def reissue_service_credential(
    session: Session,
    principal: Principal,
    account_id: str,
    access_hash: bytes,
    now: dt.datetime,
) -> None:
    """On a retried CreateServiceAccount: revoke the earlier credential, store a new one."""
    session.execute(
        update(AuthSession).where(AuthSession.account_id == account_id).values(revoked=True)
    )
    session.add(
        AuthSession(access_hash=access_hash, account_id=account_id, expires_at=None, created_at=now)
    )
    audit(
        session,
        principal,
        "CreateServiceAccount",
        account_id,
        "retry: credential reissued",
        now=now,
    )


# --- risk lists and areas ----------------------------------------------------------------------


@dataclass(frozen=True)
class ImportOutcome:
    """What an import wrote."""

    import_id: str
    matched: int
    unmatched: int


def import_risk_list(
    session: Session,
    principal: Principal,
    kind: str,
    id_tokens: Sequence[str],
    legal_basis: str,
    duration_days: int,
    now: dt.datetime,
    import_id: str | None = None,
    *,
    reserved: Mapping[str, str] | None = None,
) -> ImportOutcome:
    """One RiskListEntry per distinct token; recompute the listed people already known.

    ``reserved``: token -> person id reserved in the vault for a listed person new to it. A token
    reserved by an earlier import keeps that reservation (identity.listed_subjects).
    """
    import_id = import_id or new_id()
    expires = now + dt.timedelta(days=duration_days)
    unique = list(dict.fromkeys(id_tokens))
    subjects = listed_subjects(session, unique, dict(reserved or {}))
    session.add_all(
        RiskListEntry(
            id=new_id(),
            import_id=import_id,
            kind=kind,
            id_token=token,
            subject_id=subjects[token],
            legal_basis=legal_basis,
            imported_by=principal.id,
            created_at=now,
            expires_at=expires,
        )
        for token in unique
    )
    session.flush()
    matched = rules.recompute_by_id_tokens(session, unique, now)
    audit(session, principal, "ImportRiskList", import_id, legal_basis, now=now)
    return ImportOutcome(import_id, matched, len(unique) - matched)


def update_risk_areas(
    session: Session,
    principal: Principal,
    add: Sequence[str],
    remove: Sequence[str],
    legal_basis: str,
    now: dt.datetime,
) -> list[str]:
    """Add and clear risk areas, recompute affected travellers; returns the areas in force."""
    if remove:
        session.execute(delete(RiskArea).where(RiskArea.division_code.in_(list(remove))))
    for code in add:
        area = session.get(RiskArea, code)
        if area is None:
            session.add(
                RiskArea(
                    division_code=code, legal_basis=legal_basis, added_by=principal.id, added_at=now
                )
            )
        else:
            area.legal_basis = legal_basis
            area.added_by = principal.id
    session.flush()
    rules.recompute_travellers(session, [*add, *remove], now)
    audit(
        session, principal, "UpdateRiskAreas", ",".join([*add, *remove])[:64], legal_basis, now=now
    )
    return list(
        session.execute(select(RiskArea.division_code).order_by(RiskArea.division_code)).scalars()
    )


# --- official status changes -------------------------------------------------------------------


def propose_status_change(
    session: Session,
    principal: Principal,
    person: Person,
    color: int,
    legal_basis: str,
    duration_days: int,
    now: dt.datetime,
) -> StatusChange:
    """A PENDING change; takes effect only after a second official approves it."""
    change = StatusChange(
        id=new_id(),
        person_id=person.id,
        color=color,
        legal_basis=legal_basis,
        state="PENDING",
        proposed_by=principal.id,
        proposed_by_label=principal.label,
        reviewed_by_label="",
        review_comment="",
        duration_days=duration_days,
        created_at=now,
    )
    session.add(change)
    audit(session, principal, "ProposeStatusChange", change.id, legal_basis, now=now)
    session.flush()
    return change


def review_status_change(
    session: Session,
    principal: Principal,
    change_id: str,
    approve: bool,
    comment: str,
    now: dt.datetime,
) -> tuple[StatusChange, Person]:
    """Approve (APPROVED, supersedes earlier decisions, recompute) or reject a pending change."""
    change = session.get(StatusChange, change_id, with_for_update=True)
    if change is None:
        raise NotFound("STATUS_CHANGE_NOT_FOUND", "no such status change")
    person = get_person(session, principal, change.person_id)
    if change.proposed_by == principal.id:
        raise PermissionDenied(
            "SECOND_APPROVER_REQUIRED", "a status change needs a second official to review it"
        )
    if change.state != "PENDING":
        raise FailedPrecondition("STATUS_CHANGE_NOT_PENDING", "the status change is not pending")
    change.reviewed_by = principal.id
    change.reviewed_by_label = principal.label
    change.review_comment = comment
    change.reviewed_at = now
    if approve:
        # The newest approved decision supersedes earlier ones for the same person.
        for older in session.execute(
            select(StatusChange).where(
                StatusChange.person_id == person.id,
                StatusChange.state == "APPROVED",
                StatusChange.id != change.id,
            )
        ).scalars():
            older.state = "LIFTED"
            older.lifted_at = now
        change.state = "APPROVED"
        if change.duration_days > 0:
            change.expires_at = now + dt.timedelta(days=change.duration_days)
        session.flush()
        rules.recompute(session, person, now)
    else:
        change.state = "REJECTED"
    audit(
        session,
        principal,
        "ReviewStatusChange",
        change.id,
        "approve" if approve else "reject",
        now=now,
    )
    session.flush()
    return change, person


def list_status_changes(
    session: Session,
    principal: Principal,
    state: str | None,
    limit: int,
    cursor: dict[str, Any] | None,
    now: dt.datetime,
) -> tuple[list[tuple[StatusChange, Person]], dict[str, Any] | None]:
    """Changes newest first, in the caller's jurisdiction."""
    stmt = select(StatusChange, Person).join(Person, Person.id == StatusChange.person_id)
    clause = division_clause(principal, Person.division_code)
    if clause is not None:
        stmt = stmt.where(clause)
    if state:
        stmt = stmt.where(StatusChange.state == state)
    if cursor is not None:
        at = dt.datetime.fromisoformat(str(cursor["t"]))
        stmt = stmt.where(
            or_(
                StatusChange.created_at < at,
                and_(StatusChange.created_at == at, StatusChange.id < str(cursor["i"])),
            )
        )
    stmt = stmt.order_by(StatusChange.created_at.desc(), StatusChange.id.desc()).limit(limit + 1)
    rows = [(c, p) for c, p in session.execute(stmt).all()]
    audit(session, principal, "ListStatusChanges", state or "", now=now)
    if len(rows) > limit:
        last = rows[limit - 1][0]
        return rows[:limit], {"t": last.created_at.isoformat(), "i": last.id}
    return rows, None


# --- corrections -------------------------------------------------------------------------------


def list_corrections(
    session: Session,
    principal: Principal,
    pending_only: bool,
    limit: int,
    cursor: dict[str, Any] | None,
    now: dt.datetime,
) -> tuple[list[tuple[Correction, Person]], dict[str, Any] | None]:
    """Corrections newest first, in the caller's jurisdiction."""
    stmt = select(Correction, Person).join(Person, Person.id == Correction.person_id)
    clause = division_clause(principal, Person.division_code)
    if clause is not None:
        stmt = stmt.where(clause)
    if pending_only:
        stmt = stmt.where(Correction.state == "PENDING")
    if cursor is not None:
        at = dt.datetime.fromisoformat(str(cursor["t"]))
        stmt = stmt.where(
            or_(
                Correction.created_at < at,
                and_(Correction.created_at == at, Correction.id < str(cursor["i"])),
            )
        )
    stmt = stmt.order_by(Correction.created_at.desc(), Correction.id.desc()).limit(limit + 1)
    rows = [(c, p) for c, p in session.execute(stmt).all()]
    audit(session, principal, "ListCorrections", "pending" if pending_only else "", now=now)
    if len(rows) > limit:
        last = rows[limit - 1][0]
        return rows[:limit], {"t": last.created_at.isoformat(), "i": last.id}
    return rows, None


def review_correction(
    session: Session,
    principal: Principal,
    correction_id: str,
    accept: bool,
    comment: str,
    now: dt.datetime,
) -> tuple[Correction, Person]:
    """Accept or reject a correction; accepting an appeal lifts the appealed decision."""
    correction = session.get(Correction, correction_id, with_for_update=True)
    if correction is None:
        raise NotFound("CORRECTION_NOT_FOUND", "no such correction")
    person = get_person(session, principal, correction.person_id)
    change = session.get(StatusChange, correction.change_id) if correction.change_id else None
    if change is not None and principal.id in (change.proposed_by, change.reviewed_by):
        raise PermissionDenied(
            "REVIEWER_INVOLVED_IN_DECISION",
            "an appeal must be reviewed by an official not involved in the decision",
        )
    if correction.state != "PENDING":
        raise FailedPrecondition("CORRECTION_NOT_PENDING", "the correction is not pending")
    correction.state = "ACCEPTED" if accept else "REJECTED"
    correction.reviewed_by = principal.id
    correction.review_comment = comment
    correction.reviewed_at = now
    if accept:
        if change is not None and change.state in ("APPROVED", "PENDING"):
            change.state = "LIFTED"
            change.lifted_at = now
        session.flush()
        rules.recompute(session, person, now)
    audit(
        session,
        principal,
        "ReviewCorrection",
        correction.id,
        "accept" if accept else "reject",
        now=now,
    )
    session.flush()
    return correction, person


# --- passages ----------------------------------------------------------------------------------


def query_passages(
    session: Session,
    principal: Principal,
    *,
    person_id: str | None,
    checkpoint_id: str | None,
    start: dt.datetime,
    end: dt.datetime,
    purpose: str,
    limit: int,
    cursor: dict[str, Any] | None,
    now: dt.datetime,
    audit_target: str = "",
) -> tuple[list[tuple[Passage, Person, Checkpoint]], dict[str, Any] | None]:
    """Passages of a person or a checkpoint in [start, end), newest first, audited.

    District admins see passages recorded in their jurisdiction only.
    """
    stmt = (
        select(Passage, Person, Checkpoint)
        .join(Person, Person.id == Passage.person_id)
        .join(Checkpoint, Checkpoint.id == Passage.checkpoint_id)
        .where(Passage.occurred_at >= start, Passage.occurred_at < end)
    )
    if checkpoint_id is not None:
        get_checkpoint(session, principal, checkpoint_id)
        stmt = stmt.where(Passage.checkpoint_id == checkpoint_id)
    if person_id is not None:
        stmt = stmt.where(Passage.person_id == person_id)
    clause = division_clause(principal, Passage.division_code)
    if clause is not None:
        stmt = stmt.where(clause)
    if cursor is not None:
        at = dt.datetime.fromisoformat(str(cursor["t"]))
        stmt = stmt.where(
            or_(
                Passage.occurred_at < at,
                and_(Passage.occurred_at == at, Passage.id < str(cursor["i"])),
            )
        )
    stmt = stmt.order_by(Passage.occurred_at.desc(), Passage.id.desc()).limit(limit + 1)
    rows = [(p, person, cp) for p, person, cp in session.execute(stmt).all()]
    audit(
        session,
        principal,
        "QueryPassages",
        audit_target or person_id or checkpoint_id or "",
        purpose,
        now=now,
    )
    if len(rows) > limit:
        last = rows[limit - 1][0]
        return rows[:limit], {"t": last.occurred_at.isoformat(), "i": last.id}
    return rows, None


# --- retention settings ------------------------------------------------------------------------


def _int_setting(session: Session, key: str, default: int) -> int:
    row = session.get(Setting, key)
    if row is None:
        return default
    try:
        value = int(row.value)
    except ValueError:
        return default
    return value if 1 <= value <= 365 else default


def retention_days(session: Session, default_days: int) -> tuple[int, int]:
    """(passage_days, declaration_days) in force: Setting rows override the process default."""
    return (
        _int_setting(session, PASSAGE_DAYS_KEY, default_days),
        _int_setting(session, DECLARATION_DAYS_KEY, default_days),
    )


def set_retention_days(
    session: Session,
    principal: Principal,
    passage_days: int,
    declaration_days: int,
    now: dt.datetime,
) -> None:
    """Store both retention periods."""
    for key, value in ((PASSAGE_DAYS_KEY, passage_days), (DECLARATION_DAYS_KEY, declaration_days)):
        row = session.get(Setting, key)
        if row is None:
            session.add(Setting(key=key, value=str(value), updated_at=now))
        else:
            row.value = str(value)
            row.updated_at = now
    audit(
        session, principal, "UpdateRetentionSettings", f"{passage_days}/{declaration_days}", now=now
    )
