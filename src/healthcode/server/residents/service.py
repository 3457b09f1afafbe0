"""ResidentService: profile, dependents, declarations, status, own passages and corrections.

Identity values go to the privacy vault before the database transaction (one round trip); every
write then happens in ONE transaction together with its idempotency record and the status
recomputation, and nothing is written for a rejected request.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from typing import Any

import grpc
import structlog
from healthcode_sdk._gen.healthcode.v1 import resident_service_pb2 as pb
from healthcode_sdk._gen.healthcode.v1 import resident_service_pb2_grpc as pb_grpc
from sqlalchemy import and_, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from healthcode.common.errors import AlreadyExists, FailedPrecondition, NotFound, invalid
from healthcode.server.auth.sessions import invalidate_account
from healthcode.server.common import idempotency, paging
from healthcode.server.common.convert import from_timestamp
from healthcode.server.common.principal import Principal, current_principal
from healthcode.server.db.base import new_id, utcnow
from healthcode.server.db.models import Account, Checkpoint, Passage, Person
from healthcode.server.identity import create_person
from healthcode.server.platform import Platform
from healthcode.server.residents import convert, validation
from healthcode.server.residents.models import Correction, HealthDeclaration, TravelDeclaration
from healthcode.server.residents.people import (
    StoredIdentity,
    person_by_id_token,
    profile_claimed,
    store_identity,
)
from healthcode.server.residents.subjects import (
    dependents_of,
    own_person,
    profile_required,
    resolve_subject,
)
from healthcode.server.residents.validation import ValidIdentity, Violations
from healthcode.server.status import rules
from healthcode.server.status.models import StatusChange

#: The servicer context type of every handler.
Ctx = grpc.aio.ServicerContext[Any, Any]

log = structlog.get_logger("healthcode.residents")

MAX_DEPENDENTS = 5
_SVC = "/healthcode.v1.ResidentService/"
MAX_CHANGE_ID = 64


def dependent_limit() -> FailedPrecondition:
    """The error when an account already has the maximum number of dependents."""
    return FailedPrecondition(
        "DEPENDENT_LIMIT", f"an account may act for at most {MAX_DEPENDENTS} dependents"
    )


def _account(session: Session, principal: Principal) -> Account:
    account = session.get(Account, principal.id)
    if account is None:  # the session outlived its account
        raise NotFound("ACCOUNT_NOT_FOUND", "the account of this session no longer exists")
    return account


# -- RegisterProfile -------------------------------------------------------------------------------


def _register_precheck(
    session: Session, principal: Principal, request: pb.RegisterProfileRequest
) -> pb.RegisterProfileResponse | None:
    # The account first: under READ COMMITTED each statement sees what committed before it, so
    # once a concurrent first attempt's profile is seen, its replay record (same commit) is too.
    has_profile = _account(session, principal).person_id is not None
    replay = idempotency.replay(
        session,
        principal.id,
        _SVC + "RegisterProfile",
        request.request_id,
        request,
        pb.RegisterProfileResponse,
    )
    if replay is not None:
        return replay
    if has_profile:
        raise AlreadyExists("PROFILE_EXISTS", "this account already has a profile")
    return None


def _register(
    session: Session,
    principal: Principal,
    request: pb.RegisterProfileRequest,
    *,
    ident: ValidIdentity,
    stored: StoredIdentity,
    division: str,
    now: dt.datetime,
) -> pb.RegisterProfileResponse:
    # Lock before deciding: a concurrent retry waits here for the first attempt to commit, and
    # the checks below then see its profile and replay record.
    account = session.get(Account, principal.id, with_for_update=True)
    replay = _register_precheck(session, principal, request)
    if replay is not None:
        return replay
    assert account is not None
    person = person_by_id_token(session, stored.id_token)
    if person is None:
        # A new person, or a listed person whose id a risk-list import reserved.
        person = create_person(session, stored, division_code=division, managed=False, now=now)
        if person is None:
            raise profile_claimed()
    elif person.guardian_account_id == account.id or (
        person.guardian_account_id is None and person.managed
    ):
        # A person registered at a gate (or the caller's own dependent) now has the app.
        log.info("profile linked to existing person", person_id=person.id)
    else:
        raise profile_claimed()
    assert stored.name_token is not None  # residents always tokenize the name
    person.name_token = stored.name_token
    person.masked_name = stored.masked_name
    person.masked_id_number = stored.masked_id_number
    person.id_type = ident.kind.value
    person.address_token = stored.address_token
    person.masked_address = stored.masked_address
    person.phone_token = account.phone_token
    person.masked_phone = account.masked_phone
    person.division_code = division
    person.guardian_account_id = account.id
    person.relationship = ""
    person.managed = False
    session.flush()
    account.person_id = person.id
    rules.recompute(session, person, now)
    response = pb.RegisterProfileResponse(profile=convert.profile(person))
    idempotency.remember(
        session, principal.id, _SVC + "RegisterProfile", request.request_id, request, response
    )
    return response


# -- AddDependent ----------------------------------------------------------------------------------


def _new_dependent_id(
    platform: Platform, principal: Principal, request: pb.AddDependentRequest
) -> str:
    """The new dependent's person id (its vault subject), the same for every retry of ``request``.

    Concurrent retries then tokenize under one subject instead of racing for the ID number (the
    losers would find it held by a subject that is no person yet). Keyed with the server secret:
    the request holds personal data, and the id must not let anyone test guesses of it.
    """
    message = b"\0".join(
        (b"AddDependent", principal.id.encode(), request.SerializeToString(deterministic=True))
    )
    return hmac.new(platform.secret, message, hashlib.sha256).hexdigest()[:32]


def _dependent_precheck(
    session: Session, principal: Principal, request: pb.AddDependentRequest
) -> pb.AddDependentResponse | str:
    """A replayed response, or the caller's division (default division of the dependent)."""
    me = own_person(session, principal)
    full = len(dependents_of(session, principal.id, me.id)) >= MAX_DEPENDENTS
    # Read after the dependents (see _register_precheck): a retry racing its first attempt
    # that sees the new dependent also sees the replay record.
    replay = idempotency.replay(
        session,
        principal.id,
        _SVC + "AddDependent",
        request.request_id,
        request,
        pb.AddDependentResponse,
    )
    if replay is not None:
        return replay
    if full:
        raise dependent_limit()
    return me.division_code


def _add_dependent(
    session: Session,
    principal: Principal,
    request: pb.AddDependentRequest,
    *,
    ident: ValidIdentity,
    stored: StoredIdentity,
    relationship: str,
    division: str,
    now: dt.datetime,
) -> pb.AddDependentResponse:
    # Lock before deciding (see _register).
    account = session.get(Account, principal.id, with_for_update=True)
    replay = idempotency.replay(
        session,
        principal.id,
        _SVC + "AddDependent",
        request.request_id,
        request,
        pb.AddDependentResponse,
    )
    if replay is not None:
        return replay
    me = own_person(session, principal)
    assert account is not None
    if len(dependents_of(session, account.id, me.id)) >= MAX_DEPENDENTS:
        raise dependent_limit()
    person = person_by_id_token(session, stored.id_token)
    if person is None:
        person = create_person(session, stored, division_code=division, managed=True, now=now)
        if person is None:
            raise profile_claimed()
    elif person.guardian_account_id == account.id:
        raise AlreadyExists("DEPENDENT_EXISTS", "this person is already yours")
    elif person.guardian_account_id is not None or not person.managed:
        raise profile_claimed()
    assert stored.name_token is not None  # residents always tokenize the name
    person.name_token = stored.name_token
    person.masked_name = stored.masked_name
    person.masked_id_number = stored.masked_id_number
    person.id_type = ident.kind.value
    if stored.address_token is not None:
        person.address_token = stored.address_token
        person.masked_address = stored.masked_address
    elif person.address_token is None:
        person.masked_address = ""
    if person.masked_phone is None:
        person.masked_phone = ""
    person.division_code = division
    person.guardian_account_id = account.id
    person.relationship = relationship
    person.managed = True
    session.flush()
    rules.recompute(session, person, now)
    response = pb.AddDependentResponse(dependent=convert.dependent(person))
    idempotency.remember(
        session, principal.id, _SVC + "AddDependent", request.request_id, request, response
    )
    return response


# -- declarations ----------------------------------------------------------------------------------


def _declare_health(
    session: Session,
    principal: Principal,
    request: pb.SubmitHealthDeclarationRequest,
    *,
    symptoms: list[str],
    now: dt.datetime,
) -> pb.SubmitHealthDeclarationResponse:
    method = _SVC + "SubmitHealthDeclaration"

    def work() -> pb.SubmitHealthDeclarationResponse:
        person = resolve_subject(session, principal, request.subject_id)
        row = HealthDeclaration(
            id=new_id(),
            person_id=person.id,
            declared_by=principal.id,
            temperature=round(float(request.temperature_celsius), 2),
            symptoms=symptoms,
            declared_at=now,
        )
        session.add(row)
        session.flush()
        status = rules.health_status(session, person, now)
        return pb.SubmitHealthDeclarationResponse(declaration_id=row.id, status=status)

    return idempotency.once(
        session, principal.id, method, request, pb.SubmitHealthDeclarationResponse, work
    )


def _declare_travel(
    session: Session,
    principal: Principal,
    request: pb.SubmitTravelDeclarationRequest,
    *,
    visited: list[str],
    arrived: dt.datetime,
    now: dt.datetime,
) -> pb.SubmitTravelDeclarationResponse:
    method = _SVC + "SubmitTravelDeclaration"

    def work() -> pb.SubmitTravelDeclarationResponse:
        person = resolve_subject(session, principal, request.subject_id)
        row = TravelDeclaration(
            id=new_id(),
            person_id=person.id,
            declared_by=principal.id,
            visited_division_codes=visited,
            arrived_at=arrived,
            declared_at=now,
        )
        session.add(row)
        session.flush()
        status = rules.health_status(session, person, now)
        return pb.SubmitTravelDeclarationResponse(declaration_id=row.id, status=status)

    return idempotency.once(
        session, principal.id, method, request, pb.SubmitTravelDeclarationResponse, work
    )


# -- reads -----------------------------------------------------------------------------------------


def _profile(session: Session, principal: Principal) -> pb.GetProfileResponse:
    return pb.GetProfileResponse(profile=convert.profile(own_person(session, principal)))


def _dependents(session: Session, principal: Principal) -> pb.ListDependentsResponse:
    account = _account(session, principal)
    people = dependents_of(session, account.id, account.person_id)
    return pb.ListDependentsResponse(dependents=[convert.dependent(p) for p in people])


def _status(
    session: Session, principal: Principal, subject_id: str, now: dt.datetime
) -> pb.GetHealthStatusResponse:
    person = resolve_subject(session, principal, subject_id)
    return pb.GetHealthStatusResponse(status=rules.health_status(session, person, now))


def _cursor(token: str, scope: str) -> tuple[dt.datetime, str] | None:
    cursor = paging.decode_token(token)
    if cursor is None:
        return None
    try:
        if cursor["s"] != scope:
            raise ValueError("scope")
        moment = dt.datetime.fromisoformat(str(cursor["t"]))
        if moment.tzinfo is None:
            raise ValueError("naive")
        return moment, str(cursor["i"])
    except (KeyError, ValueError, TypeError) as exc:
        raise invalid("page_token", "is not a token for this request") from exc


def _next_token(moment: dt.datetime, row_id: str, scope: str) -> str:
    return paging.encode_token({"s": scope, "t": moment.isoformat(), "i": row_id})


def _passages(
    session: Session, principal: Principal, request: pb.ListMyPassagesRequest, size: int
) -> pb.ListMyPassagesResponse:
    person = resolve_subject(session, principal, request.subject_id)
    after = _cursor(request.page_token, person.id)
    stmt = (
        select(Passage, Checkpoint)
        .outerjoin(Checkpoint, Checkpoint.id == Passage.checkpoint_id)
        .where(Passage.person_id == person.id)
    )
    if after is not None:
        moment, row_id = after
        stmt = stmt.where(
            or_(
                Passage.occurred_at < moment,
                and_(Passage.occurred_at == moment, Passage.id < row_id),
            )
        )
    rows = session.execute(
        stmt.order_by(Passage.occurred_at.desc(), Passage.id.desc()).limit(size + 1)
    ).all()
    response = pb.ListMyPassagesResponse(
        passages=[convert.passage(p, person, cp) for p, cp in rows[:size]]
    )
    if len(rows) > size:
        last = rows[size - 1][0]
        response.next_page_token = _next_token(last.occurred_at, last.id, person.id)
    return response


def _file_correction(
    session: Session,
    principal: Principal,
    request: pb.FileCorrectionRequest,
    *,
    reason: str,
    now: dt.datetime,
) -> pb.FileCorrectionResponse:
    method = _SVC + "FileCorrection"
    replay = idempotency.replay(
        session, principal.id, method, request.request_id, request, pb.FileCorrectionResponse
    )
    if replay is not None:
        return replay
    person = resolve_subject(session, principal, request.subject_id)
    change_id = request.change_id.strip() or None
    if change_id is not None:
        change = session.get(StatusChange, change_id) if len(change_id) <= MAX_CHANGE_ID else None
        if change is None or change.person_id != person.id or change.state != "APPROVED":
            raise NotFound(
                "CHANGE_NOT_FOUND", "change_id is not an official decision about this person"
            )
    row = Correction(
        id=new_id(),
        person_id=person.id,
        filed_by=principal.id,
        change_id=change_id,
        reason=reason,
        state="PENDING",
        review_comment="",
        created_at=now,
    )
    session.add(row)
    session.flush()
    response = pb.FileCorrectionResponse(correction=convert.correction(row))
    idempotency.remember(session, principal.id, method, request.request_id, request, response)
    return response


def _corrections(
    session: Session, principal: Principal, request: pb.ListMyCorrectionsRequest, size: int
) -> pb.ListMyCorrectionsResponse:
    after = _cursor(request.page_token, principal.id)
    stmt = select(Correction).where(Correction.filed_by == principal.id)
    if after is not None:
        moment, row_id = after
        stmt = stmt.where(
            or_(
                Correction.created_at < moment,
                and_(Correction.created_at == moment, Correction.id < row_id),
            )
        )
    rows = list(
        session.scalars(
            stmt.order_by(Correction.created_at.desc(), Correction.id.desc()).limit(size + 1)
        )
    )
    response = pb.ListMyCorrectionsResponse(
        corrections=[convert.correction(r) for r in rows[:size]]
    )
    if len(rows) > size:
        last = rows[size - 1]
        response.next_page_token = _next_token(last.created_at, last.id, principal.id)
    return response


def count_dependents(session: Session, account_id: str) -> int:
    """How many dependents an account has (tests, admin tooling)."""
    account = session.get(Account, account_id)
    own = account.person_id if account else None
    stmt = select(func.count()).select_from(Person).where(Person.guardian_account_id == account_id)
    if own is not None:
        stmt = stmt.where(Person.id != own)
    return int(session.scalar(stmt) or 0)


# -- the service -----------------------------------------------------------------------------------


class ResidentService(pb_grpc.ResidentServiceServicer):
    """Implements ``healthcode.v1.ResidentService``."""

    def __init__(self, platform: Platform) -> None:
        self._p = platform

    async def _run(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return await self._p.db.run(fn, *args, **kwargs)

    async def _write(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run a write; once more if a concurrent request won a unique key (same person, same
        request id): the second attempt sees that row and answers accordingly."""
        try:
            return await self._p.db.run(fn, *args, **kwargs)
        except IntegrityError:
            log.info("write raced a concurrent request; deciding again", step=fn.__name__)
            return await self._p.db.run(fn, *args, **kwargs)

    async def RegisterProfile(
        self, request: pb.RegisterProfileRequest, context: Ctx
    ) -> pb.RegisterProfileResponse:
        principal = current_principal()
        errors = Violations()
        validation.check_request_id(request.request_id, errors)
        ident = validation.check_identity(request.identity, errors)
        division = validation.check_division(request.division_code, "division_code", errors)
        address = validation.check_address(request.address, "address", errors, required=True)
        errors.raise_if_any()
        assert ident is not None
        replay = await self._run(_register_precheck, principal, request)
        if replay is not None:
            return replay  # type: ignore[no-any-return]
        stored = await store_identity(self._p, ident, address, new_subject_id=principal.id)
        response: pb.RegisterProfileResponse = await self._write(
            _register,
            principal,
            request,
            ident=ident,
            stored=stored,
            division=division,
            now=utcnow(),
        )
        invalidate_account(principal.id)
        log.info("profile registered", account_id=principal.id, linked=stored.existing)
        return response

    async def GetProfile(
        self, request: pb.GetProfileRequest, context: Ctx
    ) -> pb.GetProfileResponse:
        return await self._run(_profile, current_principal())  # type: ignore[no-any-return]

    async def AddDependent(
        self, request: pb.AddDependentRequest, context: Ctx
    ) -> pb.AddDependentResponse:
        principal = current_principal()
        errors = Violations()
        validation.check_request_id(request.request_id, errors)
        ident = validation.check_identity(request.identity, errors)
        relationship = validation.check_relationship(request.relationship, errors)
        division = ""
        if request.division_code.strip():
            division = validation.check_division(request.division_code, "division_code", errors)
        address = validation.check_address(request.address, "address", errors, required=False)
        errors.raise_if_any()
        assert ident is not None
        pre = await self._run(_dependent_precheck, principal, request)
        if isinstance(pre, pb.AddDependentResponse):
            return pre
        division = division or pre
        stored = await store_identity(
            self._p, ident, address, new_subject_id=_new_dependent_id(self._p, principal, request)
        )
        response: pb.AddDependentResponse = await self._write(
            _add_dependent,
            principal,
            request,
            ident=ident,
            stored=stored,
            relationship=relationship,
            division=division,
            now=utcnow(),
        )
        log.info("dependent added", account_id=principal.id, linked=stored.existing)
        return response

    async def ListDependents(
        self, request: pb.ListDependentsRequest, context: Ctx
    ) -> pb.ListDependentsResponse:
        return await self._run(_dependents, current_principal())  # type: ignore[no-any-return]

    async def SubmitHealthDeclaration(
        self, request: pb.SubmitHealthDeclarationRequest, context: Ctx
    ) -> pb.SubmitHealthDeclarationResponse:
        principal = current_principal()
        errors = Violations()
        validation.check_request_id(request.request_id, errors)
        validation.check_temperature(request.temperature_celsius, errors)
        symptoms = validation.check_symptoms(list(request.symptoms), errors)
        errors.raise_if_any()
        return await self._write(  # type: ignore[no-any-return]
            _declare_health, principal, request, symptoms=symptoms, now=utcnow()
        )

    async def SubmitTravelDeclaration(
        self, request: pb.SubmitTravelDeclarationRequest, context: Ctx
    ) -> pb.SubmitTravelDeclarationResponse:
        principal = current_principal()
        now = utcnow()
        errors = Violations()
        validation.check_request_id(request.request_id, errors)
        visited = validation.check_visited(list(request.visited_division_codes), errors)
        arrived: dt.datetime | None = None
        try:
            arrived = from_timestamp(request.arrive_time, "arrive_time")
        except Exception:
            errors.add("arrive_time", "is out of range")
        else:
            skew = dt.timedelta(seconds=self._p.settings.clock_skew_seconds)
            arrived = validation.check_arrival(arrived, now, skew, errors)
        errors.raise_if_any()
        assert arrived is not None
        return await self._write(  # type: ignore[no-any-return]
            _declare_travel,
            principal,
            request,
            visited=visited,
            arrived=min(arrived, now),
            now=now,
        )

    async def GetHealthStatus(
        self, request: pb.GetHealthStatusRequest, context: Ctx
    ) -> pb.GetHealthStatusResponse:
        return await self._run(  # type: ignore[no-any-return]
            _status, current_principal(), request.subject_id, utcnow()
        )

    async def ListMyPassages(
        self, request: pb.ListMyPassagesRequest, context: Ctx
    ) -> pb.ListMyPassagesResponse:
        size = paging.page_size(request.page_size)
        return await self._run(  # type: ignore[no-any-return]
            _passages, current_principal(), request, size
        )

    async def FileCorrection(
        self, request: pb.FileCorrectionRequest, context: Ctx
    ) -> pb.FileCorrectionResponse:
        principal = current_principal()
        errors = Violations()
        validation.check_request_id(request.request_id, errors)
        reason = validation.check_reason(request.reason, errors)
        errors.raise_if_any()
        return await self._write(  # type: ignore[no-any-return]
            _file_correction, principal, request, reason=reason, now=utcnow()
        )

    async def ListMyCorrections(
        self, request: pb.ListMyCorrectionsRequest, context: Ctx
    ) -> pb.ListMyCorrectionsResponse:
        size = paging.page_size(request.page_size)
        return await self._run(  # type: ignore[no-any-return]
            _corrections, current_principal(), request, size
        )


__all__ = ["MAX_DEPENDENTS", "ResidentService", "count_dependents", "profile_required"]
