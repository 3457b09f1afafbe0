"""Store logic of the checkpoint service: scan batches, ID-card registrations, lists.

Sync SQLAlchemy functions, each called inside one unit of work by the service.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from healthcode_sdk._gen.healthcode.v1 import checkpoint_service_pb2 as pb
from sqlalchemy import ColumnElement, and_, false, or_, select, true
from sqlalchemy.orm import Session

from healthcode.codes import CodeRejected, CodeVerifier, VerifiedCode
from healthcode.common.errors import FailedPrecondition
from healthcode.server.common.principal import Principal, Role
from healthcode.server.db.models import Checkpoint, Passage, Person
from healthcode.server.identity import StoredIdentity, create_person
from healthcode.server.status.rules import current_color, recompute
from healthcode.server.verification import store as vstore

#: Reason when the vault knows an ID number the server has no person for.
PERSON_UNAVAILABLE = "PERSON_UNAVAILABLE"


#: Vault tokens of one ID card (the shared identity logic's result).
CardTokens = StoredIdentity


@dataclass(slots=True)
class ScanWork:
    """One scan of a StreamScans message after validation."""

    scan_id: str
    #: Rejection reason found by validation (nothing is recorded), or "".
    reason: str = ""
    code: str = ""
    card: CardTokens | None = None
    direction: int = 0
    method: int = 0
    temperature: float = 0.0
    scan_time: dt.datetime | None = None
    offline_decision: int = 0
    verified: VerifiedCode | None = None


def find_or_create_person(
    session: Session,
    card: CardTokens,
    division_code: str,
    now: dt.datetime,
    known: dict[str, Person] | None = None,
) -> tuple[Person, bool]:
    """The person with this ID-number token, or a new managed person in ``division_code``."""
    person = (known or {}).get(card.id_token)
    if person is None:
        person = session.execute(
            select(Person).where(Person.id_token == card.id_token)
        ).scalar_one_or_none()
    if person is not None:
        return person, False
    # A new person, or a listed person whose id a risk-list import reserved (identity.py).
    person = create_person(session, card, division_code=division_code, managed=True, now=now)
    if person is None:
        # The vault knows the ID number but this server has no person for it (erased).
        raise FailedPrecondition(
            PERSON_UNAVAILABLE, "this person cannot be registered at the gate; ask the district"
        )
    session.flush()
    recompute(session, person, now)
    if known is not None:
        known[card.id_token] = person
    return person, True


def _decision_msg(
    scan_id: str,
    ack: int,
    person: Person | None = None,
    recorded: vstore.Recorded | None = None,
    reason: str = "",
) -> pb.ScanDecision:
    msg = pb.ScanDecision(scan_id=scan_id, ack=ack, reason=reason)  # type: ignore[arg-type]
    if recorded is not None:
        msg.decision = recorded.decision  # type: ignore[assignment]
        msg.color = recorded.color  # type: ignore[assignment]
        msg.passage_id = recorded.passage_id
    if person is not None:
        msg.identity.CopyFrom(vstore.masked_identity(person))
    return msg


def process_scans(  # noqa: PLR0917 - unit of work, called positionally via Database.run
    session: Session,
    verifier: CodeVerifier,
    gate_source: str,
    checkpoint_id: str,
    scans: Sequence[ScanWork],
    now: dt.datetime,
) -> pb.StreamScansResponse:
    """Decide and record one StreamScans message in one transaction; answers in order."""
    gate = vstore.gate_for(session, gate_source, checkpoint_id)
    candidates = [s.scan_id for s in scans if not s.reason]
    existing: dict[str, Passage] = {}
    if candidates:
        for row in session.execute(
            select(Passage).where(
                Passage.source_id == gate.source_id, Passage.scan_id.in_(set(candidates))
            )
        ).scalars():
            existing[row.scan_id] = row
    # Verify the codes of new scans (at scan time for offline scans) before any write.
    for scan in scans:
        if scan.reason or scan.scan_id in existing or not scan.code:
            continue
        assert scan.scan_time is not None
        at = scan.scan_time if scan.offline_decision else now
        try:
            scan.verified = verifier.verify(scan.code, now=at.timestamp())
        except CodeRejected as rejected:
            scan.reason = rejected.reason
    holders = vstore.find_holders(
        session, [s.verified.claims.code_id for s in scans if s.verified is not None]
    )
    person_ids = {row.person_id for row in existing.values()}
    people: dict[str, Person] = {}
    if person_ids:
        for person in session.execute(select(Person).where(Person.id.in_(person_ids))).scalars():
            people[person.id] = person
    card_people: dict[str, Person] = {}
    tokens = [s.card.id_token for s in scans if s.card is not None and not s.reason]
    if tokens:
        for person in session.execute(
            select(Person).where(Person.id_token.in_(set(tokens)))
        ).scalars():
            card_people[person.id_token] = person
    answered: dict[str, pb.ScanDecision] = {}
    decisions: list[pb.ScanDecision] = []
    for scan in scans:
        earlier = answered.get(scan.scan_id)
        if earlier is not None:  # the same scan id twice in one message
            again = pb.ScanDecision()
            again.CopyFrom(earlier)
            if again.ack == pb.SCAN_ACK_RECORDED:
                again.ack = pb.SCAN_ACK_DUPLICATE
            decisions.append(again)
            continue
        msg = _one_scan(session, gate, scan, now, existing, people, holders, card_people)
        if scan.scan_id:
            answered[scan.scan_id] = msg
        decisions.append(msg)
    return pb.StreamScansResponse(decisions=decisions)


def _one_scan(  # noqa: PLR0917 - unit of work, called positionally via Database.run
    session: Session,
    gate: vstore.Gate,
    scan: ScanWork,
    now: dt.datetime,
    existing: dict[str, Passage],
    people: dict[str, Person],
    holders: dict[bytes, vstore.Holder],
    card_people: dict[str, Person],
) -> pb.ScanDecision:
    stored = None if scan.reason else existing.get(scan.scan_id)
    if stored is not None:
        recorded = vstore.Recorded(
            passage_id=stored.id,
            person_id=stored.person_id,
            color=stored.color,
            decision=stored.decision,
            direction=stored.direction,
            method=stored.method,
            temperature=stored.temperature,
            occurred_at=stored.occurred_at,
            offline=stored.offline,
            duplicate=True,
        )
        return _decision_msg(
            scan.scan_id, pb.SCAN_ACK_DUPLICATE, people.get(stored.person_id), recorded
        )
    if scan.reason:
        return _decision_msg(scan.scan_id, pb.SCAN_ACK_REJECTED, reason=scan.reason)
    if scan.verified is not None:
        holder = holders.get(scan.verified.claims.code_id)
        if holder is None:
            return _decision_msg(scan.scan_id, pb.SCAN_ACK_REJECTED, reason=vstore.CODE_NOT_FOUND)
        if holder.revoked:
            return _decision_msg(scan.scan_id, pb.SCAN_ACK_REJECTED, reason="CODE_REVOKED")
        person = holder.person
    else:
        assert scan.card is not None
        try:
            person, _ = find_or_create_person(
                session, scan.card, gate.division_code, now, card_people
            )
        except FailedPrecondition as err:
            return _decision_msg(scan.scan_id, pb.SCAN_ACK_REJECTED, reason=err.reason)
    color = current_color(session, person, now)
    offline = bool(scan.offline_decision)
    decision = scan.offline_decision if offline else vstore.decide(color, scan.temperature)
    assert scan.scan_time is not None
    recorded = vstore.record_passage(
        session,
        gate,
        vstore.PassageInput(
            scan_id=scan.scan_id,
            direction=scan.direction,
            method=scan.method,
            temperature=scan.temperature,
            occurred_at=scan.scan_time if offline else now,
            offline=offline,
        ),
        person.id,
        color,
        decision,
    )
    ack = pb.SCAN_ACK_DUPLICATE if recorded.duplicate else pb.SCAN_ACK_RECORDED
    return _decision_msg(scan.scan_id, ack, person, recorded)


# ---------------------------------------------------------------------------------------------
# Lists


def division_filter(principal: Principal) -> ColumnElement[bool]:
    """SQL form of :meth:`Principal.can_see_division` on ``Person.division_code``."""
    if principal.role in (Role.HEALTH_AUTHORITY, Role.SECURITY_OFFICER, Role.PROVINCIAL):
        return true()
    code = principal.division_code
    if not code:
        return false()
    if code.endswith("00"):
        return Person.division_code.startswith(code.rstrip("0")[:4])
    return Person.division_code == code


def passage_page(  # noqa: PLR0917 - unit of work, called positionally via Database.run
    session: Session,
    checkpoint_id: str,
    start: dt.datetime,
    end: dt.datetime,
    after: tuple[dt.datetime, str] | None,
    limit: int,
) -> list[tuple[Passage, Person, str]]:
    """Passages of a checkpoint in [start, end), newest first, after a keyset cursor."""
    stmt = (
        select(Passage, Person, Checkpoint.name)
        .join(Person, Person.id == Passage.person_id)
        .join(Checkpoint, Checkpoint.id == Passage.checkpoint_id)
        .where(
            Passage.checkpoint_id == checkpoint_id,
            Passage.occurred_at >= start,
            Passage.occurred_at < end,
        )
    )
    if after is not None:
        at, passage_id = after
        stmt = stmt.where(
            or_(Passage.occurred_at < at, and_(Passage.occurred_at == at, Passage.id < passage_id))
        )
    stmt = stmt.order_by(Passage.occurred_at.desc(), Passage.id.desc()).limit(limit)
    return [(p, person, name) for p, person, name in session.execute(stmt).all()]


def resident_page(
    session: Session, principal: Principal, color: int, after: str | None, limit: int
) -> list[Person]:
    """Persons the principal may see (jurisdiction), optionally of one colour, by id."""
    stmt = select(Person).where(division_filter(principal))
    if color:
        stmt = stmt.where(Person.color == color)
    if after is not None:
        stmt = stmt.where(Person.id > after)
    return list(session.execute(stmt.order_by(Person.id).limit(limit)).scalars())
