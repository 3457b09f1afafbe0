"""CheckpointService: the gate. Scans streamed from edge devices, ID-card registrations,
the checkpoint's passage list and the jurisdiction's residents.

StreamScans protocol (server side)
    For every request message (1-100 scans) the server validates each scan, decides it, records
    the passages of the whole message in ONE transaction and answers with one response message
    holding one decision per scan, in order. Scans are deduplicated by (device or staff account,
    scan id): a scan seen before (in this stream, an earlier stream, or earlier in the same
    message) is answered ``SCAN_ACK_DUPLICATE`` with the stored decision; a bad scan is answered
    ``SCAN_ACK_REJECTED`` with a reason and nothing is recorded for it. The next request message
    is read only after the previous one is committed and answered, so gRPC flow control slows a
    device down to the speed of the database (backpressure). If the message as a whole cannot be
    handled (vault or database unavailable) the stream ends with that error and nothing of the
    message is recorded; the device resends it on a new stream and deduplication makes that safe.

Offline scans (``offline_decision`` set) are recorded with ``offline = true``, the device's
decision (what actually happened at the gate) and the scan time as ``occurred_at``; their codes
are verified as of the scan time. The response carries the person's current colour so the device
can flag a mismatch.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc
from healthcode_sdk._gen.healthcode.v1 import checkpoint_service_pb2 as pb
from healthcode_sdk._gen.healthcode.v1 import checkpoint_service_pb2_grpc as pb_grpc
from healthcode_sdk._gen.healthcode.v1 import common_pb2, resident_service_pb2
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from healthcode.codes import CodeVerifier
from healthcode.common.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    PermissionDenied,
    invalid,
)
from healthcode.common.identity import IdKind, normalize_phone
from healthcode.server.checkpoints import store
from healthcode.server.common import idempotency, paging
from healthcode.server.common.convert import from_timestamp, to_timestamp
from healthcode.server.common.principal import Principal, current_principal
from healthcode.server.db.base import new_id, utcnow
from healthcode.server.db.models import Person
from healthcode.server.identity import IdentityInput, store_identities
from healthcode.server.residents.validation import Violations, check_address, check_identity
from healthcode.server.status.rules import current_color
from healthcode.server.verification import store as vstore
from healthcode.server.verification.unit import run_unit
from healthcode.server.verification.validation import (
    check_direction,
    check_id_method,
    direction_or_none,
    id_method_or_none,
    is_valid_scan_id,
    temperature_problem,
)

Ctx = grpc.aio.ServicerContext[Any, Any]

if TYPE_CHECKING:
    from healthcode.server.platform import Platform

T = TypeVar("T")

MAX_SCANS = 100
#: A scan may be at most this far in the device's future.
MAX_FUTURE = dt.timedelta(minutes=5)
DEFAULT_WINDOW = dt.timedelta(hours=24)
MAX_WINDOW = dt.timedelta(days=31)
REGISTER_METHOD = "/healthcode.v1.CheckpointService/RegisterByIdCard"
ADD_RESIDENT_METHOD = "/healthcode.v1.CheckpointService/AddJurisdictionResident"
_SEX_CODES = frozenset({"", "0", "1", "2", "9"})
_OFFLINE_DECISIONS = frozenset(
    {
        common_pb2.PASSAGE_DECISION_UNSPECIFIED,
        common_pb2.PASSAGE_DECISION_ALLOW,
        common_pb2.PASSAGE_DECISION_DENY,
    }
)


# ---------------------------------------------------------------------------------------------
# ID card validation and tokenization


class CardInput:
    """A validated ID card: normalised values (plaintext, held only until tokenized)."""

    __slots__ = ("address", "id_number", "kind", "name", "phone")

    def __init__(
        self, name: str, id_number: str, kind: IdKind, address: str, phone: str = ""
    ) -> None:
        self.name = name
        self.id_number = id_number
        self.kind = kind
        self.address = address
        self.phone = phone


def check_card(card: pb.IdCardData, prefix: str) -> tuple[CardInput | None, list[FieldViolation]]:
    """Validate the card fields; violations carry ``prefix.field`` paths."""
    errors = Violations()
    identity = check_identity(
        resident_service_pb2.PersonIdentity(
            name=card.name, id_number=card.id_number, id_type=card.id_type
        ),
        errors,
        prefix,
    )
    address = check_address(card.address, f"{prefix}.address", errors, required=False)
    if card.sex_code not in _SEX_CODES:
        errors.add(f"{prefix}.sex_code", "must be empty or a GB/T 2261.1 code (0, 1, 2, 9)")
    ethnicity = card.ethnicity_code
    if ethnicity and not (
        len(ethnicity) == 2 and ethnicity.isdigit() and 1 <= int(ethnicity) <= 98
    ):
        errors.add(f"{prefix}.ethnicity_code", "must be empty or a two-digit GB 3304 code")
    if errors.items or identity is None:
        return None, errors.items
    return CardInput(identity.name, identity.id_number, identity.kind, address), []


def _card_reason(violations: list[FieldViolation]) -> str:
    first = violations[0].field.rsplit(".", 1)[-1]
    return f"{first.upper()}_INVALID"


async def tokenize_cards(
    platform: Platform,
    cards: list[CardInput],
    fields: tuple[str, str, str, str] = (
        "id_card.id_number",
        "id_card.name",
        "id_card.address",
        "phone",
    ),
) -> list[store.CardTokens]:
    """Vault references of every card of a request (:func:`identity.store_identities`).

    One ``lookup`` round trip finds the ID numbers the vault knows (the usual case at a gate:
    the person passed before, or registered in the app); only unknown people are tokenized (ID
    number, name, address, phone) in a second round trip, which happens once per person. A
    listed person whose id a risk-list import reserved has name, address and phone tokenized
    under that reserved id, which becomes their person id.
    """
    if not cards:
        return []
    return await store_identities(
        platform,
        [
            IdentityInput(
                id_number=c.id_number,
                name=c.name,
                kind=c.kind,
                address=c.address,
                phone=c.phone,
                fields=fields,
            )
            for c in cards
        ],
        lookup_first=True,
        refresh_person=False,
    )


# ---------------------------------------------------------------------------------------------
# Scan validation


def validate_scan(
    scan: pb.Scan, now: dt.datetime, oldest: dt.datetime
) -> tuple[store.ScanWork, CardInput | None]:
    """Check one scan; a problem becomes the scan's rejection reason (nothing is raised)."""
    work = store.ScanWork(scan_id=scan.scan_id)
    if not is_valid_scan_id(scan.scan_id):
        work.reason = "SCAN_ID_INVALID"
        return work, None
    if not scan.HasField("scan_time"):
        work.reason = "SCAN_TIME_INVALID"
        return work, None
    ts = scan.scan_time
    if not (0 <= ts.nanos < 1_000_000_000 and 0 < ts.seconds < 253402300800):
        work.reason = "SCAN_TIME_INVALID"
        return work, None
    scan_time = dt.datetime.fromtimestamp(ts.seconds + ts.nanos / 1e9, tz=dt.UTC)
    if scan_time > now + MAX_FUTURE or scan_time < oldest:
        work.reason = "SCAN_TIME_INVALID"
        return work, None
    work.scan_time = scan_time
    direction = direction_or_none(scan.direction)
    if direction is None:
        work.reason = "DIRECTION_INVALID"
        return work, None
    work.direction = direction
    if temperature_problem(scan.temperature_celsius):
        work.reason = "TEMPERATURE_INVALID"
        return work, None
    work.temperature = float(scan.temperature_celsius)
    if scan.offline_decision not in _OFFLINE_DECISIONS:
        work.reason = "OFFLINE_DECISION_INVALID"
        return work, None
    work.offline_decision = int(scan.offline_decision)
    subject = scan.WhichOneof("subject")
    if subject == "code":
        if scan.method not in (
            common_pb2.PASSAGE_METHOD_UNSPECIFIED,
            common_pb2.PASSAGE_METHOD_QR_CODE,
        ):
            work.reason = "METHOD_INVALID"
            return work, None
        if not scan.code:
            work.reason = "CODE_BAD_PREFIX"
            return work, None
        work.method = common_pb2.PASSAGE_METHOD_QR_CODE
        work.code = scan.code
        return work, None
    if subject == "id_card":
        method = id_method_or_none(scan.method)
        if method is None:
            work.reason = "METHOD_INVALID"
            return work, None
        work.method = method
        card, violations = check_card(scan.id_card, "id_card")
        if card is None:
            work.reason = _card_reason(violations)
            return work, None
        return work, card
    work.reason = "SCAN_SUBJECT_MISSING"
    return work, None


# ---------------------------------------------------------------------------------------------
# Units of work


def _passage_proto(
    passage: vstore.Recorded, gate: vstore.Gate, person: Person
) -> common_pb2.Passage:
    return common_pb2.Passage(
        passage_id=passage.passage_id,
        checkpoint_id=gate.checkpoint_id,
        checkpoint_name=gate.checkpoint_name,
        division_code=gate.division_code,
        identity=vstore.masked_identity(person),
        color=passage.color,  # type: ignore[arg-type]
        direction=passage.direction,  # type: ignore[arg-type]
        method=passage.method,  # type: ignore[arg-type]
        decision=passage.decision,  # type: ignore[arg-type]
        occurred_at=to_timestamp(passage.occurred_at),
        offline=passage.offline,
        temperature_celsius=passage.temperature,
    )


def _register(  # noqa: PLR0917 - unit of work, called positionally via Database.run
    session: Session,
    principal: Principal,
    request: pb.RegisterByIdCardRequest,
    card: store.CardTokens,
    method: int,
    direction: int,
) -> pb.RegisterByIdCardResponse:
    def work() -> pb.RegisterByIdCardResponse:
        now = utcnow()
        gate = vstore.gate_for(session, principal.id, principal.checkpoint_id)
        person, created = store.find_or_create_person(session, card, gate.division_code, now)
        color = current_color(session, person, now)
        recorded = vstore.record_passage(
            session,
            gate,
            vstore.PassageInput(
                scan_id=request.request_id or new_id(),
                direction=direction,
                method=method,
                temperature=request.temperature_celsius,
                occurred_at=now,
            ),
            person.id,
            color,
            vstore.decide(color, request.temperature_celsius),
        )
        return pb.RegisterByIdCardResponse(
            passage=_passage_proto(recorded, gate, person),
            color=recorded.color,  # type: ignore[arg-type]
            newly_registered=created,
        )

    return idempotency.once(
        session, principal.id, REGISTER_METHOD, request, pb.RegisterByIdCardResponse, work
    )


def _resident_proto(person: Person, color: int) -> pb.JurisdictionResident:
    return pb.JurisdictionResident(
        subject_id=person.id,
        identity=common_pb2.MaskedIdentity(
            masked_name=person.masked_name,
            masked_id_number=person.masked_id_number,
            masked_phone=person.masked_phone,
        ),
        division_code=person.division_code,
        masked_address=person.masked_address,
        color=color,  # type: ignore[arg-type]
        managed=person.managed,
    )


def _add_resident(
    session: Session,
    principal: Principal,
    request: pb.AddJurisdictionResidentRequest,
    card: store.CardTokens,
    division: str,
) -> pb.AddJurisdictionResidentResponse:
    def work() -> pb.AddJurisdictionResidentResponse:
        now = utcnow()
        if session.execute(select(Person.id).where(Person.id_token == card.id_token)).first():
            raise AlreadyExists("PERSON_ALREADY_REGISTERED", "this person is already registered")
        person, _ = store.find_or_create_person(session, card, division, now)
        return pb.AddJurisdictionResidentResponse(
            resident=_resident_proto(person, current_color(session, person, now))
        )

    return idempotency.once(
        session,
        principal.id,
        ADD_RESIDENT_METHOD,
        request,
        pb.AddJurisdictionResidentResponse,
        work,
    )


def _list_passages(  # noqa: PLR0917 - unit of work, called positionally via Database.run
    session: Session,
    checkpoint_id: str,
    start: dt.datetime,
    end: dt.datetime,
    after: tuple[dt.datetime, str] | None,
    size: int,
    cursor_base: dict[str, object],
) -> pb.ListPassagesResponse:
    rows = store.passage_page(session, checkpoint_id, start, end, after, size + 1)
    more = len(rows) > size
    rows = rows[:size]
    passages = []
    for passage, person, name in rows:
        gate = vstore.Gate(passage.source_id, passage.checkpoint_id, name, passage.division_code)
        recorded = vstore.Recorded(
            passage_id=passage.id,
            person_id=passage.person_id,
            color=passage.color,
            decision=passage.decision,
            direction=passage.direction,
            method=passage.method,
            temperature=passage.temperature,
            occurred_at=passage.occurred_at,
            offline=passage.offline,
            duplicate=False,
        )
        passages.append(_passage_proto(recorded, gate, person))
    token = ""
    if more and rows:
        last = rows[-1][0]
        token = paging.encode_token({**cursor_base, "t": _micros(last.occurred_at), "i": last.id})
    return pb.ListPassagesResponse(passages=passages, next_page_token=token)


def _list_residents(
    session: Session,
    principal: Principal,
    color: int,
    after: str | None,
    size: int,
) -> pb.ListJurisdictionResidentsResponse:
    persons = store.resident_page(session, principal, color, after, size + 1)
    more = len(persons) > size
    persons = persons[:size]
    token = ""
    if more and persons:
        token = paging.encode_token(
            {"k": "residents", "p": principal.id, "c": color, "a": persons[-1].id}
        )
    return pb.ListJurisdictionResidentsResponse(
        residents=[_resident_proto(p, p.color) for p in persons], next_page_token=token
    )


def _micros(value: dt.datetime) -> int:
    return int(value.timestamp() * 1_000_000)


def _from_micros(value: object) -> dt.datetime:
    if type(value) is not int:
        raise ValueError("bad cursor")
    return dt.datetime.fromtimestamp(value / 1_000_000, tz=dt.UTC)


class CheckpointService(pb_grpc.CheckpointServiceServicer):
    """healthcode.v1.CheckpointService."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._db = platform.db
        self._keys = platform.keys
        self._settings = platform.settings

    async def _run_retrying(self, fn: Callable[..., T], *args: object) -> T:
        """Run a unit of work; retry once when a concurrent writer won a unique-key race."""
        try:
            return await run_unit(self._db, fn, *args)
        except IntegrityError:
            return await run_unit(self._db, fn, *args)

    # -- StreamScans ----------------------------------------------------------------------

    async def StreamScans(
        self,
        request_iterator: AsyncIterator[pb.StreamScansRequest],
        context: Ctx,
    ) -> AsyncIterator[pb.StreamScansResponse]:
        """Scans in, one response per request message, in order (see the module docstring)."""
        principal = current_principal()
        checkpoint_id = principal.require_checkpoint()
        async for request in request_iterator:
            yield await self._handle_scans(principal, checkpoint_id, request)

    async def _handle_scans(
        self, principal: Principal, checkpoint_id: str, request: pb.StreamScansRequest
    ) -> pb.StreamScansResponse:
        if not 1 <= len(request.scans) <= MAX_SCANS:
            raise invalid("scans", f"must hold 1 to {MAX_SCANS} scans")
        now = utcnow()
        oldest = now - dt.timedelta(days=self._settings.retention_days)
        works: list[store.ScanWork] = []
        cards: list[CardInput] = []
        card_works: list[store.ScanWork] = []
        for scan in request.scans:
            work, card = validate_scan(scan, now, oldest)
            works.append(work)
            if card is not None:
                cards.append(card)
                card_works.append(work)
        for work, tokens in zip(
            card_works, await tokenize_cards(self._platform, cards), strict=True
        ):
            work.card = tokens
        snapshot = await self._keys.snapshot()
        return await self._run_retrying(
            _process, snapshot.verifier, principal.id, checkpoint_id, works
        )

    # -- RegisterByIdCard -----------------------------------------------------------------

    async def RegisterByIdCard(
        self, request: pb.RegisterByIdCardRequest, context: Ctx
    ) -> pb.RegisterByIdCardResponse:
        """Record a passage from ID card data; unknown persons join the checkpoint's division."""
        principal = current_principal()
        principal.require_checkpoint()
        violations: list[FieldViolation] = []
        try:
            idempotency.check_request_id(request.request_id)
        except InvalidArgument as err:
            violations.extend(err.violations)
        card, card_violations = check_card(request.id_card, "id_card")
        violations.extend(card_violations)
        if id_method_or_none(request.method) is None:
            violations.append(FieldViolation("method", "must be an ID card method"))
        if direction_or_none(request.direction) is None:
            violations.append(FieldViolation("direction", "must be ENTRY or EXIT"))
        problem = temperature_problem(request.temperature_celsius)
        if problem:
            violations.append(FieldViolation("temperature_celsius", problem))
        if violations or card is None:
            fields = ", ".join(dict.fromkeys(v.field for v in violations))
            raise InvalidArgument("INVALID_ARGUMENT", f"invalid {fields}", violations=violations)
        method = check_id_method(request.method)
        direction = check_direction(request.direction)
        (tokens,) = await tokenize_cards(self._platform, [card])
        return await self._run_retrying(_register, principal, request, tokens, method, direction)

    # -- ListPassages ---------------------------------------------------------------------

    async def ListPassages(
        self, request: pb.ListPassagesRequest, context: Ctx
    ) -> pb.ListPassagesResponse:
        """Passages of the caller's checkpoint in a window (default 24 h, at most 31 days)."""
        principal = current_principal()
        checkpoint_id = principal.require_checkpoint()
        size = paging.page_size(request.page_size)
        now = utcnow()
        end = from_timestamp(request.end_time, "end_time") or now
        start = from_timestamp(request.start_time, "start_time") or end - DEFAULT_WINDOW
        if start >= end:
            raise invalid("start_time", "must be before end_time")
        if end - start > MAX_WINDOW:
            raise invalid("start_time", "the window may span at most 31 days")
        base: dict[str, object] = {
            "k": "passages",
            "cp": checkpoint_id,
            "s": _micros(start),
            "e": _micros(end),
        }
        after: tuple[dt.datetime, str] | None = None
        cursor = paging.decode_token(request.page_token)
        if cursor is not None:
            try:
                if any(cursor.get(k) != v for k, v in base.items() if k not in {"s", "e"}):
                    raise ValueError("other list")
                start, end = _from_micros(cursor["s"]), _from_micros(cursor["e"])
                base["s"], base["e"] = cursor["s"], cursor["e"]
                passage_id = cursor["i"]
                if not isinstance(passage_id, str):
                    raise ValueError("bad cursor")
                after = (_from_micros(cursor["t"]), passage_id)
            except (KeyError, ValueError, OverflowError, OSError):
                raise invalid("page_token", "is not a token of this list") from None
        return await run_unit(
            self._db, _list_passages, checkpoint_id, start, end, after, size, base
        )

    # -- Jurisdiction ---------------------------------------------------------------------

    async def ListJurisdictionResidents(
        self, request: pb.ListJurisdictionResidentsRequest, context: Ctx
    ) -> pb.ListJurisdictionResidentsResponse:
        """Residents of the caller's jurisdiction, masked, optionally of one colour."""
        principal = current_principal()
        size = paging.page_size(request.page_size)
        color = int(request.color)
        if color not in (0, 1, 2, 3):
            raise invalid("color", "must be a known colour or unspecified")
        after: str | None = None
        cursor = paging.decode_token(request.page_token)
        if cursor is not None:
            if (cursor.get("k"), cursor.get("p"), cursor.get("c")) != (
                "residents",
                principal.id,
                color,
            ) or not isinstance(cursor.get("a"), str):
                raise invalid("page_token", "is not a token of this list")
            after = cursor["a"]
        return await run_unit(self._db, _list_residents, principal, color, after, size)

    async def AddJurisdictionResident(
        self, request: pb.AddJurisdictionResidentRequest, context: Ctx
    ) -> pb.AddJurisdictionResidentResponse:
        """Register a person without a smartphone in the caller's division (managed)."""
        principal = current_principal()
        division = principal.division_code
        if not division:
            raise PermissionDenied("NO_JURISDICTION", "the caller has no jurisdiction")
        errors = Violations()
        try:
            idempotency.check_request_id(request.request_id)
        except InvalidArgument as err:
            errors.items.extend(err.violations)
        identity = check_identity(request.identity, errors, "identity")
        address = check_address(request.address, "address", errors, required=True)
        phone = None
        if request.phone:
            phone = normalize_phone(request.phone)
            if phone is None:
                errors.add(
                    "phone", "must be a Chinese mobile number: 11 digits starting with 13-19"
                )
        errors.raise_if_any()
        assert identity is not None
        card = CardInput(identity.name, identity.id_number, identity.kind, address, phone or "")
        (tokens,) = await tokenize_cards(
            self._platform, [card], ("identity.id_number", "identity.name", "address", "phone")
        )
        return await self._run_retrying(_add_resident, principal, request, tokens, division)


def _process(
    session: Session,
    verifier: CodeVerifier,
    source_id: str,
    checkpoint_id: str,
    works: list[store.ScanWork],
) -> pb.StreamScansResponse:
    return store.process_scans(session, verifier, source_id, checkpoint_id, works, utcnow())
