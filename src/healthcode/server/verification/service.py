"""VerificationService: online verification, batch verification, trust and revocation lists,
status by identity for the provincial platform.

Hot path (VerifyCode): the key snapshot is in memory; decoding, the signature check, the holder
lookup, the current colour and the passage insert all run in ONE unit of work on the database
thread pool (one thread hop, one transaction: a join on the code id, an ``INSERT .. ON CONFLICT DO
NOTHING RETURNING`` for the passage). No vault call: masked forms live on the Person row.
"""

from __future__ import annotations

import datetime as dt
import functools
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from healthcode_sdk._gen.healthcode.v1 import common_pb2
from healthcode_sdk._gen.healthcode.v1 import verification_service_pb2 as pb
from healthcode_sdk._gen.healthcode.v1 import verification_service_pb2_grpc as pb_grpc
from sqlalchemy import Connection, select
from sqlalchemy.orm import Session

from healthcode.codes import CodeExpired, CodeRejected, CodeVerifier, VerifiedCode
from healthcode.common.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    ServiceError,
    invalid,
)
from healthcode.common.identity import is_valid_id_number, normalize_id_number
from healthcode.server.common.convert import to_timestamp
from healthcode.server.common.idempotency import check_request_id
from healthcode.server.common.principal import Principal, Role, current_principal
from healthcode.server.db.base import new_id, utcnow
from healthcode.server.db.engine import Database
from healthcode.server.db.models import AuditEvent, Person
from healthcode.server.status.rules import current_color
from healthcode.server.verification import store
from healthcode.server.verification.unit import (
    BatchWriter,
    Outcome,
    run_unit,
    session_transaction,
)
from healthcode.server.verification.validation import (
    check_code_text,
    check_direction,
    check_temperature,
)
from healthcode.vault.fields import FieldType

Ctx = grpc.aio.ServicerContext[Any, Any]

if TYPE_CHECKING:
    from healthcode.server.platform import Platform

#: Most codes in one BatchVerifyCodes call.
MAX_BATCH = 500
#: Batches at least this large are verified on two threads (ECDSA releases the GIL).
PARALLEL_BATCH = 64
MAX_PURPOSE = 200

_RECORDING_ROLES = frozenset({Role.STAFF, Role.DEVICE})
#: Any colour but green: ``decide`` treats yellow and red alike.
_NOT_GREEN = common_pb2.CODE_COLOR_RED
_KEY_STATUS = {
    "ACTIVE": pb.KEY_STATUS_ACTIVE,
    "RETIRED": pb.KEY_STATUS_RETIRED,
    "REVOKED": pb.KEY_STATUS_REVOKED,
}
_verify_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="verify")


def _ts(value: dt.datetime) -> Timestamp:
    ts = to_timestamp(value)
    assert ts is not None
    return ts


def _expire_ts(seconds: int) -> Timestamp:
    return _ts(dt.datetime.fromtimestamp(seconds, tz=dt.UTC))


def _check(verifier: CodeVerifier, code: str) -> tuple[float, VerifiedCode | CodeRejected]:
    """Decode and verify outside the transaction (CPU only); the rejection is returned."""
    now = time.time()
    try:
        return now, verifier.verify(code, now=now)
    except CodeRejected as rejected:
        return now, rejected


def _verify_one(  # noqa: PLR0917 - one scan's parts, positionally as before
    session: Session,
    checked: tuple[float, VerifiedCode | CodeRejected],
    request: pb.VerifyCodeRequest,
    principal: Principal,
    direction: int,
    scan_id: str | None = None,
) -> pb.VerifyCodeResponse:
    at, outcome = checked
    now = dt.datetime.fromtimestamp(at, tz=dt.UTC)
    records = principal.role in _RECORDING_ROLES
    scan_id = scan_id or request.request_id or new_id()
    if isinstance(outcome, CodeRejected):
        # A retry of a scan recorded before the code expired gets its first answer again.
        if isinstance(outcome, CodeExpired) and records and request.request_id:
            done = store.existing_passage(session, principal.id, scan_id)
            if done is not None:
                return _replayed(session, done)
        raise store.rejection_error(outcome)
    verified = outcome
    person = store.holder_view(session, verified, now)
    color = person.color
    decision = store.decide(color, request.temperature_celsius)
    passage_id = ""
    if records:
        gate = store.gate_for(session, principal.id, principal.checkpoint_id)
        recorded = store.record_passage(
            session,
            gate,
            store.PassageInput(
                scan_id=scan_id,
                direction=direction,
                method=common_pb2.PASSAGE_METHOD_QR_CODE,
                temperature=request.temperature_celsius,
                occurred_at=now,
            ),
            person.id,
            color,
            decision,
        )
        passage_id, color, decision = recorded.passage_id, recorded.color, recorded.decision
    return _response(verified, person, color, decision, passage_id)


@dataclass(slots=True)
class _Scan:
    """One VerifyCode request queued for the batch writer."""

    request: pb.VerifyCodeRequest
    principal: Principal
    direction: int
    verifier: CodeVerifier
    #: The request id, or an id of this scan made once (a re-run must not record twice).
    scan_id: str
    checked: tuple[float, VerifiedCode | CodeRejected] | None = None


def _prepare_scan(scan: _Scan) -> _Scan:
    """CPU step on the writer thread, before the transaction: decode and verify the code."""
    if scan.checked is None:
        scan.checked = _check(scan.verifier, scan.request.code)
    return scan


def _response(
    verified: VerifiedCode, person: store.PersonView, color: int, decision: int, passage_id: str
) -> pb.VerifyCodeResponse:
    claims = verified.claims
    return pb.VerifyCodeResponse(
        color=color,  # type: ignore[arg-type]
        signed_color=int(claims.colour),  # type: ignore[arg-type]
        kind=int(claims.kind),  # type: ignore[arg-type]
        identity=store.masked_identity(person),
        expire_time=_expire_ts(claims.expires_at),
        decision=decision,  # type: ignore[arg-type]
        passage_id=passage_id,
        id_card_required=claims.kind == 2,
    )


def _slow(session: Session, scan: _Scan) -> pb.VerifyCodeResponse:
    assert scan.checked is not None
    return _verify_one(
        session, scan.checked, scan.request, scan.principal, scan.direction, scan.scan_id
    )


class _GateBatch:
    """The batch function of the VerifyCode writer (see ``verification.unit.BatchWriter``)."""

    def __init__(self, db: Database) -> None:
        self._db = db

    def __call__(self, connection: Connection, scans: Sequence[_Scan]) -> list[Outcome]:
        if connection.dialect.name == "postgresql":
            return self._postgres(connection, scans)
        with session_transaction(connection) as session, session.begin():
            return _verify_batch(session, scans)

    def _postgres(self, connection: Connection, scans: Sequence[_Scan]) -> list[Outcome]:
        """One autocommit statement for the common case, the ordinary path for the rest."""
        outcomes: list[Outcome | None] = [None] * len(scans)
        fast: list[tuple[int, store.FastScan]] = []
        for index, scan in enumerate(scans):
            assert scan.checked is not None
            at, outcome = scan.checked
            principal = scan.principal
            if not isinstance(outcome, VerifiedCode) or principal.role not in _RECORDING_ROLES:
                continue
            gate = store.cached_gate(principal.id, principal.checkpoint_id)
            if gate is None:
                continue
            temperature = scan.request.temperature_celsius
            fast.append(
                (
                    index,
                    store.FastScan(
                        cti=outcome.claims.code_id,
                        gate=gate,
                        scan=store.PassageInput(
                            scan_id=scan.scan_id,
                            direction=scan.direction,
                            method=common_pb2.PASSAGE_METHOD_QR_CODE,
                            temperature=temperature,
                            occurred_at=dt.datetime.fromtimestamp(at, tz=dt.UTC),
                        ),
                        passage_id=new_id(),
                        green_decision=store.decide(store.GREEN, temperature),
                        other_decision=store.decide(_NOT_GREEN, temperature),
                    ),
                )
            )
        if fast:
            recorded = store.pg_record(connection.connection.dbapi_connection, [f for _, f in fast])
            for index, item in fast:
                done = recorded.get(item.passage_id)
                if done is not None:
                    verified = scans[index].checked[1]  # type: ignore[index]
                    assert isinstance(verified, VerifiedCode)
                    outcomes[index] = (
                        True,
                        _response(
                            verified, done.person, done.color, done.decision, done.passage_id
                        ),
                    )
        rest = [i for i, o in enumerate(outcomes) if o is None]
        if rest:
            with self._db.sessions.begin() as session:
                for index in rest:
                    try:
                        outcomes[index] = (True, _slow(session, scans[index]))
                    except ServiceError as err:
                        outcomes[index] = (False, err)
        return [
            o if o is not None else (False, RuntimeError("scan without outcome")) for o in outcomes
        ]


_hot: dict[str, store.HotStatements] = {}


def _hot_statements(session: Session) -> store.HotStatements:
    dialect = session.get_bind().dialect
    hot = _hot.get(dialect.name)
    if hot is None:
        hot = _hot[dialect.name] = store.HotStatements(dialect)
    return hot


def _verify_batch(session: Session, scans: Sequence[_Scan]) -> list[Outcome]:
    """Many VerifyCode requests in one transaction: one holder query, one passage insert.

    Exactly :func:`_verify_one` per scan, set-based: every check that can reject a scan runs
    before the single multi-row insert; the colour is read in this transaction (fresh); a scan
    whose (source, scan id) was recorded before (a retry) or repeats one in this batch gets the
    stored passage's answer.
    """
    outcomes: list[Outcome | None] = [None] * len(scans)
    verified_ctis = [
        s.checked[1].claims.code_id
        for s in scans
        if s.checked is not None and isinstance(s.checked[1], VerifiedCode)
    ]
    hot = _hot_statements(session)
    rows = hot.holder_rows(session, verified_ctis)
    pending: list[tuple[int, VerifiedCode, store.PersonView, store.Gate, dict[str, Any]]] = []
    for index, scan in enumerate(scans):
        assert scan.checked is not None
        at, outcome = scan.checked
        try:
            if isinstance(outcome, CodeRejected):  # the replay-or-reject path of _verify_one
                outcomes[index] = (
                    True,
                    _verify_one(
                        session, scan.checked, scan.request, scan.principal, scan.direction
                    ),
                )
                continue
            now = dt.datetime.fromtimestamp(at, tz=dt.UTC)
            person = store.view_of_row(session, rows.get(outcome.claims.code_id), now)
            decision = store.decide(person.color, scan.request.temperature_celsius)
            principal = scan.principal
            if principal.role not in _RECORDING_ROLES:
                outcomes[index] = (True, _response(outcome, person, person.color, decision, ""))
                continue
            gate = store.gate_for(session, principal.id, principal.checkpoint_id)
            passage = store.PassageInput(
                scan_id=scan.scan_id,
                direction=scan.direction,
                method=common_pb2.PASSAGE_METHOD_QR_CODE,
                temperature=scan.request.temperature_celsius,
                occurred_at=now,
            )
            params = store.passage_params(
                gate, passage, person.id, person.color, decision, new_id()
            )
            pending.append((index, outcome, person, gate, params))
        except ServiceError as err:
            outcomes[index] = (False, err)
    inserted = hot.insert_passages(session, [p[4] for p in pending])
    for index, verified, person, gate, params in pending:
        passage_id = str(params["id"])
        color, decision = int(params["color"]), int(params["decision"])  # type: ignore[call-overload]
        if passage_id not in inserted:  # recorded before: answer as the first time
            done = store.existing_passage(session, gate.source_id, str(params["scan_id"]))
            assert done is not None
            passage_id, color, decision = done.passage_id, done.color, done.decision
        outcomes[index] = (True, _response(verified, person, color, decision, passage_id))
    return [o if o is not None else (False, RuntimeError("scan without outcome")) for o in outcomes]


def _replayed(session: Session, done: store.Recorded) -> pb.VerifyCodeResponse:
    person = session.get(Person, done.person_id)
    if person is None:
        raise NotFound(store.CODE_NOT_FOUND, "code is not known to this platform")
    return pb.VerifyCodeResponse(
        color=done.color,  # type: ignore[arg-type]
        identity=store.masked_identity(person),
        decision=done.decision,  # type: ignore[arg-type]
        passage_id=done.passage_id,
    )


def _verify_codes(
    verifier: CodeVerifier, codes: list[str], now: float
) -> list[VerifiedCode | CodeRejected]:
    return verifier.verify_many(codes, now=now)


def _batch_lookup(
    session: Session, outcomes: list[VerifiedCode | CodeRejected]
) -> pb.BatchVerifyCodesResponse:
    now = utcnow()
    ctis = [o.claims.code_id for o in outcomes if isinstance(o, VerifiedCode)]
    holders = store.holder_views(session, ctis, now)
    identities: dict[str, common_pb2.MaskedIdentity] = {}
    results: list[pb.CodeVerification] = []
    append = results.append
    for index, outcome in enumerate(outcomes):
        if isinstance(outcome, CodeRejected):
            append(pb.CodeVerification(index=index, reason=outcome.reason))
            continue
        claims = outcome.claims
        if claims.code_id not in holders:
            append(pb.CodeVerification(index=index, reason=store.CODE_NOT_FOUND))
            continue
        person = holders[claims.code_id]
        if person is None:
            append(pb.CodeVerification(index=index, reason="CODE_REVOKED"))
            continue
        identity = identities.get(person.id)
        if identity is None:
            identity = identities[person.id] = store.masked_identity(person)
        append(
            pb.CodeVerification(
                index=index,
                valid=True,
                color=person.color,  # type: ignore[arg-type]
                signed_color=int(claims.colour),  # type: ignore[arg-type]
                kind=int(claims.kind),  # type: ignore[arg-type]
                expire_time=Timestamp(seconds=claims.expires_at),
                identity=identity,
            )
        )
    return pb.BatchVerifyCodesResponse(results=results)


def _batch_check(verifier: CodeVerifier, codes: list[str]) -> list[VerifiedCode | CodeRejected]:
    """Verify a batch outside the transaction; big batches on two threads (the GIL is released
    while OpenSSL checks a signature)."""
    now = time.time()
    if len(codes) >= PARALLEL_BATCH:
        half = len(codes) // 2
        other = _verify_pool.submit(_verify_codes, verifier, codes[half:], now)
        return _verify_codes(verifier, codes[:half], now) + other.result()
    return _verify_codes(verifier, codes, now)


def _status_by_token(
    session: Session, principal: Principal, token: str | None, purpose: str
) -> pb.QueryStatusByIdentityResponse:
    now = utcnow()
    person = (
        session.execute(select(Person).where(Person.id_token == token)).scalar_one_or_none()
        if token
        else None
    )
    session.add(
        AuditEvent(
            actor_id=principal.id,
            actor_role=principal.role.value,
            action="QUERY_STATUS_BY_IDENTITY",
            target=person.id if person is not None else "",
            purpose=purpose,
            outcome="FOUND" if person is not None else "NOT_FOUND",
            occurred_at=now,
        )
    )
    if person is None:
        return pb.QueryStatusByIdentityResponse(found=False)
    color = current_color(session, person, now)
    return pb.QueryStatusByIdentityResponse(
        color=color,  # type: ignore[arg-type]
        found=True,
        update_time=_ts(person.status_updated_at),
        rules_version=person.rules_version,
    )


class VerificationService(pb_grpc.VerificationServiceServicer):
    """healthcode.v1.VerificationService."""

    def __init__(self, platform: Platform) -> None:
        self._platform = platform
        self._db = platform.db
        self._keys = platform.keys
        self._writer: BatchWriter[_Scan, pb.VerifyCodeResponse] = BatchWriter(
            platform.db, _GateBatch(platform.db), prepare=_prepare_scan, autocommit=True
        )

    async def VerifyCode(
        self, request: pb.VerifyCodeRequest, context: Ctx
    ) -> pb.VerifyCodeResponse:
        """Verify one code; staff and devices record a passage (deduplicated by request_id)."""
        principal = current_principal()
        check_code_text(request.code)
        direction = check_direction(request.direction)
        check_temperature(request.temperature_celsius)
        check_request_id(request.request_id)
        if principal.role in _RECORDING_ROLES:
            principal.require_checkpoint()
        snapshot = await self._keys.snapshot()
        scan = _Scan(
            request, principal, direction, snapshot.verifier, request.request_id or new_id()
        )
        response: pb.VerifyCodeResponse = await self._writer.submit(scan)
        return response

    async def BatchVerifyCodes(
        self, request: pb.BatchVerifyCodesRequest, context: Ctx
    ) -> pb.BatchVerifyCodesResponse:
        """Verify 1-500 codes; each result carries its own reason. Records nothing."""
        current_principal()
        codes = list(request.codes)
        if not 1 <= len(codes) <= MAX_BATCH:
            raise invalid("codes", f"must hold 1 to {MAX_BATCH} codes")
        snapshot = await self._keys.snapshot()
        return await run_unit(
            self._db,
            _batch_lookup,
            before=functools.partial(_batch_check, snapshot.verifier, codes),
        )

    async def GetTrustList(
        self, request: pb.GetTrustListRequest, context: Ctx
    ) -> pb.GetTrustListResponse:
        """Every issuer key, and the same list signed with the trust-list key."""
        trust = await self._keys.trust_list()
        return pb.GetTrustListResponse(
            keys=[
                pb.TrustedKey(
                    kid=info.kid,
                    alg="ES256",
                    spki_der=info.spki_der,
                    issuer=info.issuer,
                    not_before=_ts(info.not_before),
                    not_after=_ts(info.not_after),
                    status=_KEY_STATUS[info.status.value],
                )
                for info in trust.keys
            ],
            signed_trust_list=trust.signed,
            signer_spki_der=trust.signer_spki_der,
            issue_time=_ts(trust.issued_at),
        )

    async def GetRevocationList(
        self, request: pb.GetRevocationListRequest, context: Ctx
    ) -> pb.GetRevocationListResponse:
        """Revoked printed codes that have not expired, signed with the trust-list key."""
        revocation = await self._keys.revocation_list()
        return pb.GetRevocationListResponse(
            revoked_code_ids=list(revocation.revoked),
            version=revocation.version,
            signed_revocation_list=revocation.signed,
            issue_time=_ts(revocation.issued_at),
        )

    async def QueryStatusByIdentity(
        self, request: pb.QueryStatusByIdentityRequest, context: Ctx
    ) -> pb.QueryStatusByIdentityResponse:
        """A person's colour by ID number (audited); unknown persons are found=false."""
        principal = current_principal()
        number = normalize_id_number(request.id_number)
        purpose = request.purpose.strip()
        problems = []
        if not is_valid_id_number(number):
            problems.append(("id_number", "must be a valid identity number (GB 11643 or permit)"))
        if not 1 <= len(purpose) <= MAX_PURPOSE or not purpose.isprintable():
            problems.append(("purpose", f"must be 1-{MAX_PURPOSE} printable characters"))
        if problems:
            raise InvalidArgument(
                "INVALID_ARGUMENT",
                "invalid " + ", ".join(f for f, _ in problems),
                violations=[FieldViolation(f, d) for f, d in problems],
            )
        try:
            tokens = await self._platform.vault.lookup(FieldType.ID_NUMBER, [number])
        except InvalidArgument:
            raise invalid("id_number", "is not a valid identity number") from None
        token = tokens[0] if tokens else None
        return await run_unit(self._db, _status_by_token, principal, token, purpose)
