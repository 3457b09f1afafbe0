"""Online verification and passage recording, shared by VerifyCode, BatchVerifyCodes and the
checkpoint service (StreamScans, RegisterByIdCard). Sync functions run in one unit of work.

Checkpoint decision policy (documented in the VerifyCode response and the checkpoint docs):

* green and no fever (< 37.3 °C or not measured) -> ALLOW;
* yellow -> DENY: a yellow code means "restricted, get tested / see staff" (GB/T 38962 leaves the
  gate rule to the venue; the Panzhihua notice sends yellow-code holders to staff), so the
  platform's default decision at a checkpoint is DENY and staff handle the person manually;
* red -> DENY;
* a measured temperature >= 37.3 °C -> DENY whatever the colour.

Passages are deduplicated by (source, scan id): ``source_id`` is the staff account or device that
recorded it, ``scan_id`` its request id / scan id. The insert is ``ON CONFLICT DO NOTHING`` on the
unique constraint, so a retried request (even concurrently) finds the first passage instead of
writing a second one.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

from healthcode_sdk._gen.healthcode.v1 import common_pb2
from sqlalchemy import Table, bindparam, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from healthcode.codes import CodeRejected, CodeRevoked, CodeVerifier, VerifiedCode
from healthcode.common.errors import FieldViolation, InvalidArgument, NotFound, PermissionDenied
from healthcode.server.codes.models import IssuedCodeRecord
from healthcode.server.db.base import new_id
from healthcode.server.db.models import Checkpoint, Passage, Person
from healthcode.server.status.rules import RULES_VERSION, current_color

GREEN = common_pb2.CODE_COLOR_GREEN
ALLOW = common_pb2.PASSAGE_DECISION_ALLOW
DENY = common_pb2.PASSAGE_DECISION_DENY
#: A measured temperature at or above this is a fever: DENY at the checkpoint.
FEVER_CELSIUS = 37.3
#: Reason of a code that verified but is unknown to this platform (record purged or erased).
CODE_NOT_FOUND = "CODE_NOT_FOUND"


def decide(color: int, temperature: float) -> int:
    """The checkpoint decision for a colour and a measured temperature (0 = not measured)."""
    if color == GREEN and temperature < FEVER_CELSIUS:
        return ALLOW
    return DENY


def rejection_error(rejected: CodeRejected, field: str = "code") -> InvalidArgument:
    """INVALID_ARGUMENT with the rejection's reason and a violation on ``field``."""
    return InvalidArgument(
        rejected.reason,
        f"invalid {field}: {rejected.detail}",
        violations=[FieldViolation(field, rejected.detail)],
    )


def verify_or_reject(
    verifier: CodeVerifier, code: str, now: float, field: str = "code"
) -> VerifiedCode:
    """Verify signature, kid, times and key status; raise INVALID_ARGUMENT with the reason."""
    try:
        return verifier.verify(code, now=now)
    except CodeRejected as rejected:
        raise rejection_error(rejected, field) from None


@dataclass(frozen=True, slots=True)
class Holder:
    """The person behind a code and the code's stored state."""

    person: Person
    revoked: bool


# Statements are built once: building SQLAlchemy constructs per request (coercion, cache keys
# over literal values) cost more than the database work itself on the VerifyCode hot path.
_HOLDER = (
    select(IssuedCodeRecord.cti, IssuedCodeRecord.revoked_at, Person)
    .join(Person, Person.id == IssuedCodeRecord.person_id)
    .where(IssuedCodeRecord.cti == bindparam("cti"))
)
_HOLDERS = (
    select(IssuedCodeRecord.cti, IssuedCodeRecord.revoked_at, Person)
    .join(Person, Person.id == IssuedCodeRecord.person_id)
    .where(IssuedCodeRecord.cti.in_(bindparam("ctis", expanding=True)))
)


_codes_t = cast(Table, IssuedCodeRecord.__table__)
_persons_t = cast(Table, Person.__table__)
_HOLDER_ROW = (
    select(
        _codes_t.c.revoked_at,
        _persons_t.c.id,
        _persons_t.c.color,
        _persons_t.c.rules_version,
        _persons_t.c.status_valid_until,
        _persons_t.c.masked_name,
        _persons_t.c.masked_id_number,
    )
    .join(_persons_t, _persons_t.c.id == _codes_t.c.person_id)
    .where(_codes_t.c.cti == bindparam("cti"))
)


@dataclass(frozen=True, slots=True)
class PersonView:
    """What the gate shows and decides on: id, colour, masked name and ID number."""

    id: str
    color: int
    masked_name: str
    masked_id_number: str


_HOLDER_ROWS = (
    select(
        _codes_t.c.cti,
        _codes_t.c.revoked_at,
        _persons_t.c.id,
        _persons_t.c.color,
        _persons_t.c.rules_version,
        _persons_t.c.status_valid_until,
        _persons_t.c.masked_name,
        _persons_t.c.masked_id_number,
    )
    .join(_persons_t, _persons_t.c.id == _codes_t.c.person_id)
    .where(_codes_t.c.cti.in_(bindparam("ctis", expanding=True)))
)


def _colour_now(  # noqa: PLR0917 - the row's columns, in order
    session: Session,
    person_id: str,
    color: int,
    rules_version: str,
    valid_until: dt.datetime | None,
    now: dt.datetime,
) -> int:
    if valid_until is not None and valid_until.tzinfo is None:
        valid_until = valid_until.replace(tzinfo=dt.UTC)
    if rules_version != RULES_VERSION or (valid_until is not None and now >= valid_until):
        person = session.get(Person, person_id)
        assert person is not None
        return current_color(session, person, now)
    return color


def holder_views(
    session: Session, ctis: Sequence[bytes], now: dt.datetime
) -> dict[bytes, PersonView | None]:
    """Holders of many codes in ONE Core query: a view, None when revoked, absent if unknown."""
    if not ctis:
        return {}
    out: dict[bytes, PersonView | None] = {}
    colours: dict[str, int] = {}
    rows = session.connection().execute(_HOLDER_ROWS, {"ctis": list(set(ctis))})
    for cti, revoked_at, pid, color, version, valid_until, name, masked_id in rows:
        if revoked_at is not None:
            out[cti] = None
            continue
        if pid not in colours:
            colours[pid] = _colour_now(session, pid, color, version, valid_until, now)
        out[cti] = PersonView(pid, colours[pid], name, masked_id)
    return out


#: A holder row of :data:`_HOLDER_ROWS`: cti, revoked_at, id, color, rules_version,
#: status_valid_until, masked_name, masked_id_number.
HolderRow = tuple[bytes, dt.datetime | None, str, int, str, dt.datetime | None, str, str]


def holder_rows(session: Session, ctis: Sequence[bytes]) -> dict[bytes, HolderRow]:
    """The raw holder rows of many code ids in ONE Core query (unknown ids are absent)."""
    if not ctis:
        return {}
    rows = session.connection().execute(_HOLDER_ROWS, {"ctis": list(set(ctis))})
    return {row[0]: cast(HolderRow, tuple(row)) for row in rows}


def view_of_row(
    session: Session, row: HolderRow | None, now: dt.datetime, field: str = "code"
) -> PersonView:
    """The holder of a row from :func:`holder_rows` with the CURRENT colour (recomputed through
    the rules when the stored one ran out); CODE_NOT_FOUND / CODE_REVOKED otherwise."""
    if row is None:
        raise NotFound(CODE_NOT_FOUND, f"{field} is not known to this platform")
    _cti, revoked_at, person_id, color, rules_version, valid_until, masked_name, masked_id = row
    if revoked_at is not None:
        raise rejection_error(CodeRevoked("the code has been revoked"), field)
    color = _colour_now(session, person_id, color, rules_version, valid_until, now)
    return PersonView(person_id, color, masked_name, masked_id)


def holder_view(
    session: Session, verified: VerifiedCode, now: dt.datetime, field: str = "code"
) -> PersonView:
    """The holder of a verified code with their CURRENT colour, in one Core query.

    The stored colour is used while it is valid (same rules version, ``status_valid_until`` not
    passed, exactly as :func:`healthcode.server.status.rules.current_color` decides); otherwise
    the Person is loaded and recomputed through the rules. CODE_REVOKED / CODE_NOT_FOUND as
    :func:`holder_or_reject`.
    """
    row = session.connection().execute(_HOLDER_ROW, {"cti": verified.claims.code_id}).first()
    if row is None:
        raise NotFound(CODE_NOT_FOUND, f"{field} is not known to this platform")
    revoked_at, person_id, color, rules_version, valid_until, masked_name, masked_id = row
    if revoked_at is not None:
        raise rejection_error(CodeRevoked("the code has been revoked"), field)
    color = _colour_now(session, person_id, color, rules_version, valid_until, now)
    return PersonView(person_id, color, masked_name, masked_id)


def find_holders(session: Session, ctis: Sequence[bytes]) -> dict[bytes, Holder]:
    """The holders of the given code ids in ONE query (missing ids are absent)."""
    if not ctis:
        return {}
    unique = list(set(ctis))
    if len(unique) == 1:
        rows = session.execute(_HOLDER, {"cti": unique[0]}).all()
    else:
        rows = session.execute(_HOLDERS, {"ctis": unique}).all()
    return {cti: Holder(person, revoked_at is not None) for cti, revoked_at, person in rows}


def holder_or_reject(
    holders: dict[bytes, Holder], verified: VerifiedCode, field: str = "code"
) -> Holder:
    """The holder of a verified code; CODE_REVOKED / CODE_NOT_FOUND otherwise."""
    holder = holders.get(verified.claims.code_id)
    if holder is None:
        raise NotFound(CODE_NOT_FOUND, f"{field} is not known to this platform")
    if holder.revoked:
        raise rejection_error(CodeRevoked("the code has been revoked"), field)
    return holder


def masked_identity(person: Person | PersonView) -> common_pb2.MaskedIdentity:
    """Masked name and ID number (no phone: a gate does not need it)."""
    return common_pb2.MaskedIdentity(
        masked_name=person.masked_name, masked_id_number=person.masked_id_number
    )


# ---------------------------------------------------------------------------------------------
# Checkpoints and passages


@dataclass(frozen=True, slots=True)
class Gate:
    """Where a passage is recorded and who records it."""

    source_id: str
    checkpoint_id: str
    checkpoint_name: str
    division_code: str


_checkpoints: dict[str, tuple[str, str]] = {}
_checkpoints_lock = threading.Lock()


def gate_for(session: Session, source_id: str, checkpoint_id: str | None) -> Gate:
    """The gate of a staff account or device (checkpoint names/divisions are cached)."""
    if not checkpoint_id:
        raise PermissionDenied("NOT_AT_CHECKPOINT", "the caller is not bound to a checkpoint")
    known = _checkpoints.get(checkpoint_id)
    if known is None:
        checkpoint = session.get(Checkpoint, checkpoint_id)
        if checkpoint is None:
            raise PermissionDenied("NOT_AT_CHECKPOINT", "the caller's checkpoint does not exist")
        known = (checkpoint.name, checkpoint.division_code)
        with _checkpoints_lock:
            if len(_checkpoints) > 10_000:
                _checkpoints.clear()
            _checkpoints[checkpoint_id] = known
    return Gate(source_id, checkpoint_id, known[0], known[1])


@dataclass(frozen=True, slots=True)
class PassageInput:
    """One passage to record."""

    scan_id: str
    direction: int
    method: int
    temperature: float
    occurred_at: dt.datetime
    offline: bool = False


@dataclass(frozen=True, slots=True)
class Recorded:
    """A recorded (or previously recorded) passage."""

    passage_id: str
    person_id: str
    color: int
    decision: int
    direction: int
    method: int
    temperature: float
    occurred_at: dt.datetime
    offline: bool
    duplicate: bool


def existing_passage(session: Session, source_id: str, scan_id: str) -> Recorded | None:
    """The passage already recorded for (source, scan id), if any."""
    row = session.execute(
        select(Passage).where(Passage.source_id == source_id, Passage.scan_id == scan_id)
    ).scalar_one_or_none()
    if row is None:
        return None
    return Recorded(
        passage_id=row.id,
        person_id=row.person_id,
        color=row.color,
        decision=row.decision,
        direction=row.direction,
        method=row.method,
        temperature=row.temperature,
        occurred_at=row.occurred_at,
        offline=row.offline,
        duplicate=True,
    )


_PASSAGES = cast(Table, Passage.__table__)
_INSERT_PG = (
    pg_insert(_PASSAGES)
    .on_conflict_do_nothing(index_elements=["source_id", "scan_id"])
    .returning(_PASSAGES.c.id)
)
_INSERT_SQLITE = (
    sqlite_insert(_PASSAGES)
    .on_conflict_do_nothing(index_elements=["source_id", "scan_id"])
    .returning(_PASSAGES.c.id)
)


def record_passage(  # noqa: PLR0917 - unit of work, called positionally via Database.run
    session: Session, gate: Gate, scan: PassageInput, person_id: str, color: int, decision: int
) -> Recorded:
    """Insert a passage unless (source, scan id) exists; then return the stored one."""
    passage_id = new_id()
    params = {
        "id": passage_id,
        "checkpoint_id": gate.checkpoint_id,
        "person_id": person_id,
        "division_code": gate.division_code,
        "color": color,
        "direction": scan.direction,
        "method": scan.method,
        "decision": decision,
        "temperature": scan.temperature,
        "offline": scan.offline,
        "occurred_at": scan.occurred_at,
        "source_id": gate.source_id,
        "scan_id": scan.scan_id,
        "created_at": dt.datetime.now(dt.UTC),
    }
    connection = session.connection()
    stmt = _INSERT_PG if connection.dialect.name == "postgresql" else _INSERT_SQLITE
    inserted = connection.execute(stmt, params).scalar_one_or_none()
    if inserted is None:
        existing = existing_passage(session, gate.source_id, scan.scan_id)
        assert existing is not None
        return existing
    return Recorded(
        passage_id=passage_id,
        person_id=person_id,
        color=color,
        decision=decision,
        direction=scan.direction,
        method=scan.method,
        temperature=scan.temperature,
        occurred_at=scan.occurred_at,
        offline=scan.offline,
        duplicate=False,
    )


def passage_params(  # noqa: PLR0917 - the passage's columns
    gate: Gate, scan: PassageInput, person_id: str, color: int, decision: int, passage_id: str
) -> dict[str, object]:
    """The insert parameters of one passage (see :func:`insert_passages`)."""
    return {
        "id": passage_id,
        "checkpoint_id": gate.checkpoint_id,
        "person_id": person_id,
        "division_code": gate.division_code,
        "color": color,
        "direction": scan.direction,
        "method": scan.method,
        "decision": decision,
        "temperature": scan.temperature,
        "offline": scan.offline,
        "occurred_at": scan.occurred_at,
        "source_id": gate.source_id,
        "scan_id": scan.scan_id,
        "created_at": dt.datetime.now(dt.UTC),
    }


def insert_passages(session: Session, params: list[dict[str, object]]) -> set[str]:
    """Insert many passages in one multi-row ``INSERT .. ON CONFLICT (source_id, scan_id) DO
    NOTHING RETURNING id`` (SQLAlchemy's insertmanyvalues); return the ids actually inserted.

    A passage whose (source, scan id) exists already, or repeats one earlier in ``params``, is
    not inserted: the caller reads the stored one with :func:`existing_passage`.
    """
    if not params:
        return set()
    connection = session.connection()
    stmt = _INSERT_PG if connection.dialect.name == "postgresql" else _INSERT_SQLITE
    if len(params) == 1:
        inserted = connection.execute(stmt, params[0]).scalar_one_or_none()
        return {inserted} if inserted is not None else set()
    return set(connection.execute(stmt, params).scalars())


def colour_now(session: Session, person: Person, now: dt.datetime) -> int:
    """The person's current colour (stored while valid, recomputed when a rule ran out)."""
    return current_color(session, person, now)


__all__ = [
    "ALLOW",
    "CODE_NOT_FOUND",
    "DENY",
    "FEVER_CELSIUS",
    "Gate",
    "Holder",
    "PassageInput",
    "Recorded",
    "colour_now",
    "decide",
    "existing_passage",
    "find_holders",
    "gate_for",
    "holder_or_reject",
    "holder_rows",
    "insert_passages",
    "masked_identity",
    "passage_params",
    "record_passage",
    "rejection_error",
    "verify_or_reject",
    "view_of_row",
]
