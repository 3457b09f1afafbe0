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
from typing import Any, cast

from healthcode_sdk._gen.healthcode.v1 import common_pb2
from sqlalchemy import Dialect, Table, bindparam, select
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
#: What a holder lookup reads about a code's holder (after the code's ``revoked_at``).
_HOLDER_COLUMNS = (
    _codes_t.c.revoked_at,
    _persons_t.c.id,
    _persons_t.c.color,
    _persons_t.c.rules_version,
    _persons_t.c.status_valid_until,
    _persons_t.c.masked_name,
    _persons_t.c.masked_id_number,
)
_HOLDER_ROW = (
    select(*_HOLDER_COLUMNS)
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
    select(_codes_t.c.cti, *_HOLDER_COLUMNS)
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
    params = passage_params(gate, scan, person_id, color, decision, passage_id)
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


class HotStatements:
    """The two statements of the VerifyCode batch as plain DBAPI SQL for one dialect.

    SQLAlchemy's per-execution overhead (execution context, result wrapping, insertmanyvalues)
    cost more than SQLite's own work on the batch writer (ADR 0005), so the batch runs these two
    on the raw DBAPI cursor of the connection SQLAlchemy holds (same transaction). Values go
    through the columns' own bind and result processors, so rows are exactly what the ORM writes
    and reads (UTC datetimes, booleans).
    """

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self._mark = "?" if dialect.paramstyle == "qmark" else "%s"
        self._postgres = dialect.name == "postgresql"
        c, p = _codes_t.c, _persons_t.c
        # S608: only identifiers from our own table metadata are formatted in; values are bound.
        self._holders = (
            f"SELECT c.{c.cti.name}, c.{c.revoked_at.name}, p.{p.id.name}, p.{p.color.name}, "  # noqa: S608
            f"p.{p.rules_version.name}, p.{p.status_valid_until.name}, p.{p.masked_name.name}, "
            f"p.{p.masked_id_number.name} FROM {_codes_t.name} c JOIN {_persons_t.name} p "
            f"ON p.{p.id.name} = c.{c.person_id.name} WHERE c.{c.cti.name} "
        )
        self._revoked = c.revoked_at.type.dialect_impl(dialect).result_processor(dialect, None)
        self._valid_until = p.status_valid_until.type.dialect_impl(dialect).result_processor(
            dialect, None
        )
        columns = list(_PASSAGES.c)
        self._columns = [col.name for col in columns]
        self._binds = [col.type.dialect_impl(dialect).bind_processor(dialect) for col in columns]
        self._row = "(" + ", ".join([self._mark] * len(columns)) + ")"
        self._insert = f"INSERT INTO {_PASSAGES.name} ({', '.join(self._columns)}) VALUES "  # noqa: S608
        self._conflict = " ON CONFLICT (source_id, scan_id) DO NOTHING RETURNING id"
        self._sql: dict[tuple[str, int], str] = {}

    def _statement(self, kind: str, count: int) -> str:
        sql = self._sql.get((kind, count))
        if sql is None:
            if kind == "holders":
                sql = self._holders + (
                    f"= ANY({self._mark})"
                    if self._postgres
                    else "IN (" + ", ".join([self._mark] * count) + ")"
                )
            else:
                sql = self._insert + ", ".join([self._row] * count) + self._conflict
            if len(self._sql) < 1024:
                self._sql[(kind, count)] = sql
        return sql

    def holder_rows(self, session: Session, ctis: Sequence[bytes]) -> dict[bytes, HolderRow]:
        """:func:`holder_rows` in one DBAPI round trip."""
        unique = list(set(ctis))
        if not unique:
            return {}
        params: list[object] = [unique] if self._postgres else list(unique)
        cursor = _dbapi(session).cursor()
        try:
            cursor.execute(self._statement("holders", len(unique)), params)
            rows = cursor.fetchall()
        finally:
            cursor.close()
        revoked, valid_until = self._revoked, self._valid_until
        out: dict[bytes, HolderRow] = {}
        for cti, revoked_raw, pid, color, version, until_raw, name, masked_id in rows:
            revoked_at = revoked(revoked_raw) if revoked is not None else revoked_raw
            until = valid_until(until_raw) if valid_until is not None else until_raw
            out[bytes(cti)] = (bytes(cti), revoked_at, pid, color, version, until, name, masked_id)
        return out

    def insert_passages(self, session: Session, rows: list[dict[str, object]]) -> set[str]:
        """:func:`insert_passages` in one DBAPI round trip (one multi-row statement)."""
        if not rows:
            return set()
        values: list[object] = []
        for row in rows:
            for name, bind in zip(self._columns, self._binds, strict=True):
                value = row[name]
                values.append(bind(value) if bind is not None else value)
        cursor = _dbapi(session).cursor()
        try:
            cursor.execute(self._statement("insert", len(rows)), values)
            return {str(r[0]) for r in cursor.fetchall()}
        finally:
            cursor.close()


@dataclass(frozen=True, slots=True)
class FastScan:
    """One recording scan for :data:`PG_RECORD`: its code id and the passage to insert."""

    cti: bytes
    gate: Gate
    scan: PassageInput
    passage_id: str
    #: The decision if the holder is green now, and if not (``decide`` of the temperature).
    green_decision: int
    other_decision: int


@dataclass(frozen=True, slots=True)
class FastRecorded:
    """A passage :data:`PG_RECORD` inserted, with the holder as read by the same statement."""

    passage_id: str
    person: PersonView
    color: int
    decision: int


#: PostgreSQL: read the holders of many scans and insert their passages in ONE statement (one
#: round trip; run in autocommit it is its own transaction, answered after its WAL flush). Only the
#: common case is inserted: code known and not revoked, stored colour still valid (same rules
#: version, ``status_valid_until`` not reached at the scan time: exactly ``_colour_now``'s test),
#: (source, scan id) new. Every other scan gets no row back and takes the ordinary path. The
#: decision is chosen between two values computed in Python by :func:`decide`.
#:
#: The holder lookups are LATERAL subqueries fenced with ``OFFSET 0``: each scan is looked up by
#: the code's primary key, then the person's, whatever the planner's statistics say. With a plain
#: join, tables not yet analysed (a fresh or bulk-loaded database) got a plan that scanned every
#: person and every code for each batch (5.5 ms instead of 0.2 ms for 8 scans; ADR 0005).
PG_RECORD = f"""
WITH s AS (
    SELECT * FROM unnest(
        %(cti)s::bytea[], %(id)s::text[], %(checkpoint_id)s::text[], %(division_code)s::text[],
        %(direction)s::int[], %(method)s::int[], %(temperature)s::float8[],
        %(occurred_at)s::timestamptz[], %(source_id)s::text[], %(scan_id)s::text[],
        %(created_at)s::timestamptz[], %(green_decision)s::int[], %(other_decision)s::int[]
    ) AS s(cti, id, checkpoint_id, division_code, direction, method, temperature, occurred_at,
           source_id, scan_id, created_at, green_decision, other_decision)
), h AS (
    SELECT s.*, x.person_id, x.color, x.masked_name, x.masked_id_number
    FROM s
    CROSS JOIN LATERAL (
        SELECT c.person_id FROM {_codes_t.name} c
        WHERE c.cti = s.cti AND c.revoked_at IS NULL OFFSET 0
    ) c
    CROSS JOIN LATERAL (
        SELECT p.id AS person_id, p.color, p.masked_name, p.masked_id_number
        FROM {_persons_t.name} p
        WHERE p.id = c.person_id AND p.rules_version = %(rules_version)s
          AND (p.status_valid_until IS NULL OR p.status_valid_until > s.occurred_at)
        OFFSET 0
    ) x
), ins AS (
    INSERT INTO {_PASSAGES.name} (id, checkpoint_id, person_id, division_code, color, direction,
        method, decision, temperature, offline, occurred_at, source_id, scan_id, created_at)
    SELECT id, checkpoint_id, person_id, division_code, color, direction, method,
        CASE WHEN color = %(green)s THEN green_decision ELSE other_decision END,
        temperature, false, occurred_at, source_id, scan_id, created_at
    FROM h
    ON CONFLICT (source_id, scan_id) DO NOTHING
    RETURNING id, color, decision
)
SELECT ins.id, ins.color, ins.decision, h.person_id, h.masked_name, h.masked_id_number
FROM ins JOIN h ON h.id = ins.id
"""  # noqa: S608 - table names from our metadata; values are bound


def pg_record(dbapi_connection: Any, scans: Sequence[FastScan]) -> dict[str, FastRecorded]:
    """Run :data:`PG_RECORD` for ``scans`` on a psycopg connection; inserted passages by id."""
    now = dt.datetime.now(dt.UTC)
    params = {
        "cti": [f.cti for f in scans],
        "id": [f.passage_id for f in scans],
        "checkpoint_id": [f.gate.checkpoint_id for f in scans],
        "division_code": [f.gate.division_code for f in scans],
        "direction": [f.scan.direction for f in scans],
        "method": [f.scan.method for f in scans],
        "temperature": [f.scan.temperature for f in scans],
        "occurred_at": [f.scan.occurred_at for f in scans],
        "source_id": [f.gate.source_id for f in scans],
        "scan_id": [f.scan.scan_id for f in scans],
        "created_at": [now] * len(scans),
        "green_decision": [f.green_decision for f in scans],
        "other_decision": [f.other_decision for f in scans],
        "rules_version": RULES_VERSION,
        "green": GREEN,
    }
    out: dict[str, FastRecorded] = {}
    with dbapi_connection.cursor() as cursor:
        cursor.execute(PG_RECORD, params)
        for pid, color, decision, person_id, name, masked_id in cursor.fetchall():
            out[pid] = FastRecorded(
                pid, PersonView(person_id, color, name, masked_id), color, decision
            )
    return out


def cached_gate(source_id: str, checkpoint_id: str | None) -> Gate | None:
    """The gate from the checkpoint cache only (None when not cached: use :func:`gate_for`)."""
    known = _checkpoints.get(checkpoint_id) if checkpoint_id else None
    if known is None or checkpoint_id is None:
        return None
    return Gate(source_id, checkpoint_id, known[0], known[1])


def _dbapi(session: Session) -> Any:
    """The DBAPI connection under the session's connection (in its transaction)."""
    return session.connection().connection.dbapi_connection


def colour_now(session: Session, person: Person, now: dt.datetime) -> int:
    """The person's current colour (stored while valid, recomputed when a rule ran out)."""
    return current_color(session, person, now)


__all__ = [
    "ALLOW",
    "CODE_NOT_FOUND",
    "DENY",
    "FEVER_CELSIUS",
    "FastRecorded",
    "FastScan",
    "Gate",
    "Holder",
    "HotStatements",
    "PassageInput",
    "Recorded",
    "cached_gate",
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
    "pg_record",
    "record_passage",
    "rejection_error",
    "verify_or_reject",
    "view_of_row",
]
