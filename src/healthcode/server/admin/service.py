"""AdminService: what district administrators and the health authority do.

Each handler validates the whole request first (INVALID_ARGUMENT naming every bad field by its
proto path, nothing written), makes at most one vault round trip, then runs one unit of work that
performs the write, its audit record and any status recomputation together. Roles are enforced by
the auth interceptor (``auth/policy.py``); handlers add jurisdiction (district admins act in their
own division only) and the two-person rule (a proposer never reviews their own proposal).
Refusals for jurisdiction or the two-person rule are audited too (outcome = the error reason).
"""

from __future__ import annotations

import datetime as dt
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import structlog
from healthcode_sdk._gen.healthcode.v1 import admin_service_pb2 as pb
from healthcode_sdk._gen.healthcode.v1 import admin_service_pb2_grpc, common_pb2
from sqlalchemy.orm import Session

from healthcode.common.errors import (
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    invalid,
)
from healthcode.common.identity import is_valid_division, is_valid_id_number, normalize_id_number
from healthcode.server.admin import store
from healthcode.server.auth.tokens import hash_enrollment_code, new_token, token_hash
from healthcode.server.common import idempotency, paging
from healthcode.server.common.convert import from_timestamp, to_timestamp
from healthcode.server.common.principal import Principal, Role, current_principal
from healthcode.server.db.base import new_id, utcnow
from healthcode.server.db.models import Checkpoint, Passage, Person
from healthcode.server.identity import reserve_id_numbers
from healthcode.server.platform import Platform
from healthcode.server.residents.models import Correction
from healthcode.server.status.models import StatusChange
from healthcode.vault.fields import FieldType

log = structlog.get_logger("healthcode.admin")

T = TypeVar("T")

SERVICE = "/healthcode.v1.AdminService/"
ENROLLMENT_TTL = dt.timedelta(hours=24)
MAX_RISK_LIST = 10_000
#: At most this many bad entries are named in one error (the first ones by index).
MAX_VIOLATIONS = 100
DEFAULT_LIST_DAYS = 14
MAX_DURATION_DAYS = 60
MAX_QUERY_WINDOW = dt.timedelta(days=31)
_COLORS = (common_pb2.CODE_COLOR_GREEN, common_pb2.CODE_COLOR_YELLOW, common_pb2.CODE_COLOR_RED)
_LIST_KINDS = {
    pb.RISK_LIST_KIND_CLOSE_CONTACT: "CLOSE_CONTACT",
    pb.RISK_LIST_KIND_CONFIRMED: "CONFIRMED",
    pb.RISK_LIST_KIND_SECONDARY_CONTACT: "SECONDARY_CONTACT",
}
_STATES = {
    "PENDING": pb.STATUS_CHANGE_STATE_PENDING,
    "APPROVED": pb.STATUS_CHANGE_STATE_APPROVED,
    "REJECTED": pb.STATUS_CHANGE_STATE_REJECTED,
    "LIFTED": pb.STATUS_CHANGE_STATE_LIFTED,
}
_STATE_NAMES = {v: k for k, v in _STATES.items()}


# --- validation helpers ------------------------------------------------------------------------


def _raise_if(violations: list[FieldViolation]) -> None:
    if violations:
        fields = ", ".join(v.field for v in violations[:5])
        raise InvalidArgument("INVALID_ARGUMENT", f"invalid {fields}", violations=violations)


def _text(value: str, field: str, low: int, high: int, violations: list[FieldViolation]) -> str:
    """Stripped text of ``low``-``high`` printable characters (newlines allowed)."""
    text = value.strip()
    if not low <= len(text) <= high:
        violations.append(FieldViolation(field, f"must be {low}-{high} characters"))
    elif not all(c.isprintable() or c in "\n\t" for c in text):
        violations.append(FieldViolation(field, "must not contain control characters"))
    return text


def _id(value: str, field: str, violations: list[FieldViolation], *, required: bool) -> str:
    """An opaque server id (hex, up to 32 characters)."""
    if not value:
        if required:
            violations.append(FieldViolation(field, "is required"))
        return ""
    if len(value) > 32 or not all(c in "0123456789abcdef" for c in value):
        violations.append(FieldViolation(field, "is not an id issued by this server"))
    return value


def _days(value: int, field: str, low: int, high: int, violations: list[FieldViolation]) -> int:
    if not low <= value <= high:
        violations.append(FieldViolation(field, f"must be between {low} and {high}"))
    return value


# --- proto conversion --------------------------------------------------------------------------


def _identity(person: Person) -> common_pb2.MaskedIdentity:
    return common_pb2.MaskedIdentity(
        masked_name=person.masked_name,
        masked_id_number=person.masked_id_number,
        masked_phone=person.masked_phone,
    )


def _set_time(target: Any, name: str, value: dt.datetime | None) -> None:
    ts = to_timestamp(value)
    if ts is not None:
        getattr(target, name).CopyFrom(ts)


def checkpoint_to_proto(checkpoint: Checkpoint) -> common_pb2.Checkpoint:
    """The API form of a checkpoint."""
    msg = common_pb2.Checkpoint(
        checkpoint_id=checkpoint.id,
        name=checkpoint.name,
        division_code=checkpoint.division_code,
        location=checkpoint.location,
    )
    _set_time(msg, "create_time", checkpoint.created_at)
    return msg


def change_to_proto(change: StatusChange, person: Person) -> pb.StatusChange:
    """The API form of an official status change."""
    msg = pb.StatusChange(
        change_id=change.id,
        subject_id=person.id,
        identity=_identity(person),
        color=change.color,  # type: ignore[arg-type]
        legal_basis=change.legal_basis,
        state=_STATES.get(change.state, pb.STATUS_CHANGE_STATE_UNSPECIFIED),
        proposed_by=change.proposed_by_label,
        reviewed_by=change.reviewed_by_label,
        review_comment=change.review_comment,
    )
    _set_time(msg, "create_time", change.created_at)
    _set_time(msg, "review_time", change.reviewed_at)
    _set_time(msg, "expire_time", change.expires_at)
    return msg


def correction_to_proto(correction: Correction, person: Person) -> pb.CorrectionReview:
    """The reviewer's view of a correction."""
    msg = pb.CorrectionReview(
        correction_id=correction.id,
        subject_id=person.id,
        identity=_identity(person),
        change_id=correction.change_id or "",
        reason=correction.reason,
        pending=correction.state == "PENDING",
        accepted=correction.state == "ACCEPTED",
        review_comment=correction.review_comment,
    )
    _set_time(msg, "create_time", correction.created_at)
    return msg


def passage_to_proto(
    passage: Passage, person: Person, checkpoint: Checkpoint
) -> common_pb2.Passage:
    """The investigator's view of a passage (masked identity)."""
    msg = common_pb2.Passage(
        passage_id=passage.id,
        checkpoint_id=checkpoint.id,
        checkpoint_name=checkpoint.name,
        division_code=passage.division_code,
        identity=_identity(person),
        color=passage.color,  # type: ignore[arg-type]
        direction=passage.direction,  # type: ignore[arg-type]
        method=passage.method,  # type: ignore[arg-type]
        decision=passage.decision,  # type: ignore[arg-type]
        offline=passage.offline,
        temperature_celsius=passage.temperature,
    )
    _set_time(msg, "occurred_at", passage.occurred_at)
    return msg


async def _release(platform: Platform, subject_ids: list[str]) -> None:
    try:
        await platform.vault.erase(subject_ids, reference="risk-import:rolled-back")
    except ServiceError as err:
        # Left to no one: the listed person would be refused at registration (PROFILE_CLAIMED).
        log.warning("reserved subjects not released", count=len(subject_ids), reason=err.reason)


# --- the service -------------------------------------------------------------------------------


class AdminService(admin_service_pb2_grpc.AdminServiceServicer):
    """gRPC servicer of ``healthcode.v1.AdminService``."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await self.platform.db.run(fn, *args)

    async def _guard(self, principal: Principal, action: str, target: str, work: Awaitable[T]) -> T:
        """Await ``work``; audit refusals (jurisdiction, two-person rule) in their own unit of
        work, since the refused unit of work rolled back."""
        try:
            return await work
        except PermissionDenied as err:
            now, reason = utcnow(), err.reason
            await self._run(
                lambda s: store.audit(s, principal, action, target, outcome=reason, now=now)
            )
            raise

    async def _lookup_person_token(self, id_number: str) -> str | None:
        tokens = await self.platform.vault.lookup(FieldType.ID_NUMBER, [id_number])
        return tokens[0] if tokens else None

    # --- checkpoints, staff, devices, service accounts ---

    async def CreateCheckpoint(
        self, request: pb.CreateCheckpointRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateCheckpointResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        _request_id(request.request_id, violations)
        name = _text(request.name, "name", 1, 64, violations)
        location = _text(request.location, "location", 0, 200, violations)
        if not is_valid_division(request.division_code):
            violations.append(FieldViolation("division_code", "must be a six-digit GB/T 2260 code"))
        _raise_if(violations)
        method = SERVICE + "CreateCheckpoint"

        def work(session: Session) -> pb.CreateCheckpointResponse:
            def create() -> pb.CreateCheckpointResponse:
                checkpoint = store.create_checkpoint(
                    session, principal, name, request.division_code, location, utcnow()
                )
                return pb.CreateCheckpointResponse(checkpoint=checkpoint_to_proto(checkpoint))

            return idempotency.once(
                session, principal.id, method, request, pb.CreateCheckpointResponse, create
            )

        return await self._guard(
            principal, "CreateCheckpoint", request.division_code, self._run(work)
        )

    async def ListCheckpoints(
        self, request: pb.ListCheckpointsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListCheckpointsResponse:
        principal = current_principal()
        if request.division_code and not is_valid_division(request.division_code):
            raise invalid("division_code", "must be a six-digit GB/T 2260 code")
        limit = paging.page_size(request.page_size)
        cursor = paging.decode_token(request.page_token)

        def work(session: Session) -> pb.ListCheckpointsResponse:
            rows, nxt = store.list_checkpoints(
                session, principal, request.division_code, limit, cursor, utcnow()
            )
            return pb.ListCheckpointsResponse(
                checkpoints=[checkpoint_to_proto(c) for c in rows],
                next_page_token=paging.encode_token(nxt) if nxt else "",
            )

        return await self._run(work)

    async def CreateStaffAccount(
        self, request: pb.CreateStaffAccountRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.CreateStaffAccountResponse:
        from healthcode.server.auth.bootstrap import (
            STAFF_ROLES,
            create_staff_account,
        )

        principal = current_principal()
        violations: list[FieldViolation] = []
        _request_id(request.request_id, violations)
        role = Role.from_proto(request.role)
        if role is None or role not in STAFF_ROLES:
            violations.append(
                FieldViolation(
                    "role", "must be staff, district admin, health authority or security officer"
                )
            )
        checkpoint_id = _id(request.checkpoint_id, "checkpoint_id", violations, required=False)
        if request.division_code and not is_valid_division(request.division_code):
            violations.append(FieldViolation("division_code", "must be a six-digit GB/T 2260 code"))
        _raise_if(violations)
        assert role is not None
        method = SERVICE + "CreateStaffAccount"

        def check(session: Session) -> pb.CreateStaffAccountResponse | None:
            replay = idempotency.replay(
                session,
                principal.id,
                method,
                request.request_id,
                request,
                pb.CreateStaffAccountResponse,
            )
            if replay is not None:
                return replay
            if principal.role is Role.DISTRICT_ADMIN:
                if role is not Role.STAFF:
                    raise PermissionDenied(
                        "ROLE_NOT_GRANTABLE", "district admins create staff accounts only"
                    )
                if checkpoint_id:
                    store.get_checkpoint(session, principal, checkpoint_id)
                if request.division_code:
                    store.require_division(principal, request.division_code)
            return None

        replay = await self._guard(principal, "CreateStaffAccount", checkpoint_id, self._run(check))
        if replay is not None:
            return replay
        # Validates phone and display name itself (field paths of this request), tokenizes the
        # phone in the vault and writes the account.
        account_id = await create_staff_account(
            self.platform,
            request.phone,
            request.display_name,
            role,
            checkpoint_id or None,
            request.division_code or None,
        )
        resp = pb.CreateStaffAccountResponse(account_id=account_id)

        def finish(session: Session) -> pb.CreateStaffAccountResponse:
            replay = idempotency.replay(
                session,
                principal.id,
                method,
                request.request_id,
                request,
                pb.CreateStaffAccountResponse,
            )
            if replay is not None:
                return replay
            store.audit(
                session, principal, "CreateStaffAccount", account_id, role.value, now=utcnow()
            )
            idempotency.remember(session, principal.id, method, request.request_id, request, resp)
            return resp

        return await self._run(finish)

    async def CreateDeviceEnrollment(
        self,
        request: pb.CreateDeviceEnrollmentRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.CreateDeviceEnrollmentResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        checkpoint_id = _id(request.checkpoint_id, "checkpoint_id", violations, required=True)
        _raise_if(violations)
        code = secrets.token_urlsafe(24)
        now = utcnow()
        expires = now + ENROLLMENT_TTL
        await self._guard(
            principal,
            "CreateDeviceEnrollment",
            checkpoint_id,
            self._run(
                store.create_device_enrollment,
                principal,
                checkpoint_id,
                hash_enrollment_code(code),
                expires,
                now,
            ),
        )
        resp = pb.CreateDeviceEnrollmentResponse(enrollment_code=code)
        _set_time(resp, "expire_time", expires)
        return resp

    async def CreateServiceAccount(
        self,
        request: pb.CreateServiceAccountRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.CreateServiceAccountResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        _request_id(request.request_id, violations)
        role = Role.from_proto(request.role)
        if role not in (Role.PARTNER, Role.PROVINCIAL):
            violations.append(FieldViolation("role", "must be partner or provincial"))
        name = _text(request.name, "name", 1, 64, violations)
        _raise_if(violations)
        assert role is not None
        method = SERVICE + "CreateServiceAccount"
        credential = new_token()

        def work(session: Session) -> pb.CreateServiceAccountResponse:
            now = utcnow()
            # The stored response never holds the credential; a retry gets a fresh one and the
            # earlier (lost) credential is revoked.
            replay = idempotency.replay(
                session,
                principal.id,
                method,
                request.request_id,
                request,
                pb.CreateServiceAccountResponse,
            )
            if replay is not None:
                store.reissue_service_credential(
                    session, principal, replay.account_id, token_hash(credential), now
                )
                return pb.CreateServiceAccountResponse(
                    account_id=replay.account_id, credential=credential
                )
            account_id = store.create_service_account(
                session, principal, role, name, token_hash(credential), now
            )
            idempotency.remember(
                session,
                principal.id,
                method,
                request.request_id,
                request,
                pb.CreateServiceAccountResponse(account_id=account_id),
            )
            return pb.CreateServiceAccountResponse(account_id=account_id, credential=credential)

        return await self._run(work)

    # --- risk lists and areas ---

    async def ImportRiskList(
        self, request: pb.ImportRiskListRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ImportRiskListResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        _request_id(request.request_id, violations)
        kind = _LIST_KINDS.get(request.kind)
        if kind is None:
            violations.append(FieldViolation("kind", "must be a risk list kind"))
        count = len(request.id_numbers)
        if not 1 <= count <= MAX_RISK_LIST:
            violations.append(FieldViolation("id_numbers", f"must hold 1-{MAX_RISK_LIST} entries"))
        else:
            bad = 0
            for i, value in enumerate(request.id_numbers):
                if not is_valid_id_number(value):
                    bad += 1
                    if bad <= MAX_VIOLATIONS:
                        violations.append(
                            FieldViolation(f"id_numbers[{i}]", "is not a valid ID number")
                        )
        legal_basis = _text(request.legal_basis, "legal_basis", 1, 500, violations)
        days = request.duration_days or DEFAULT_LIST_DAYS
        _days(request.duration_days, "duration_days", 0, MAX_DURATION_DAYS, violations)
        _raise_if(violations)
        assert kind is not None
        method = SERVICE + "ImportRiskList"

        def check(session: Session) -> pb.ImportRiskListResponse | None:
            return idempotency.replay(
                session,
                principal.id,
                method,
                request.request_id,
                request,
                pb.ImportRiskListResponse,
            )

        replay = await self._run(check)
        if replay is not None:
            return replay
        import_id = new_id()
        values = list(dict.fromkeys(normalize_id_number(v) for v in request.id_numbers))
        # A lookup, then a tokenize of the values new to the vault only, each under its own
        # reserved person id: the listed person who registers later becomes that person, and
        # retention erases the reservation if they never do (ADR 0003, identity.py).
        listed = await reserve_id_numbers(self.platform, values)
        tokens = listed.tokens

        def work(session: Session) -> pb.ImportRiskListResponse:
            replay = check(session)
            if replay is not None:
                return replay
            outcome = store.import_risk_list(
                session,
                principal,
                kind,
                tokens,
                legal_basis,
                days,
                utcnow(),
                import_id,
                reserved=listed.reserved,
            )
            resp = pb.ImportRiskListResponse(
                import_id=outcome.import_id, matched=outcome.matched, unmatched=outcome.unmatched
            )
            idempotency.remember(session, principal.id, method, request.request_id, request, resp)
            return resp

        try:
            return await self._run(work)
        except ServiceError:
            # Nothing was written: give up the subjects reserved by this attempt (best effort).
            if listed.reserved:
                await _release(self.platform, list(listed.reserved.values()))
            raise

    async def UpdateRiskAreas(
        self, request: pb.UpdateRiskAreasRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.UpdateRiskAreasResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        for field, codes in (
            ("add_division_codes", request.add_division_codes),
            ("remove_division_codes", request.remove_division_codes),
        ):
            if len(codes) > 1000:
                violations.append(FieldViolation(field, "must hold at most 1000 codes"))
                continue
            for i, code in enumerate(codes):
                if not is_valid_division(code):
                    violations.append(
                        FieldViolation(f"{field}[{i}]", "must be a six-digit GB/T 2260 code")
                    )
        add = list(dict.fromkeys(request.add_division_codes))
        remove = list(dict.fromkeys(request.remove_division_codes))
        if not add and not remove:
            violations.append(FieldViolation("add_division_codes", "add or remove at least one"))
        if set(add) & set(remove):
            violations.append(
                FieldViolation("remove_division_codes", "must not repeat a code being added")
            )
        legal_basis = _text(request.legal_basis, "legal_basis", 1, 500, violations)
        _raise_if(violations)
        areas: list[str] = await self._run(
            store.update_risk_areas, principal, add, remove, legal_basis, utcnow()
        )
        return pb.UpdateRiskAreasResponse(division_codes=areas)

    # --- official status changes ---

    async def ProposeStatusChange(
        self, request: pb.ProposeStatusChangeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ProposeStatusChangeResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        _request_id(request.request_id, violations)
        subject_id = _id(request.subject_id, "subject_id", violations, required=False)
        if bool(request.subject_id) == bool(request.id_number):
            violations.append(
                FieldViolation("subject_id", "give exactly one of subject_id, id_number")
            )
        if request.id_number and not is_valid_id_number(request.id_number):
            violations.append(FieldViolation("id_number", "is not a valid ID number"))
        if request.color not in _COLORS:
            violations.append(FieldViolation("color", "must be green, yellow or red"))
        legal_basis = _text(request.legal_basis, "legal_basis", 10, 1000, violations)
        _days(request.duration_days, "duration_days", 0, MAX_DURATION_DAYS, violations)
        _raise_if(violations)
        method = SERVICE + "ProposeStatusChange"

        def check(session: Session) -> pb.ProposeStatusChangeResponse | None:
            return idempotency.replay(
                session,
                principal.id,
                method,
                request.request_id,
                request,
                pb.ProposeStatusChangeResponse,
            )

        replay = await self._run(check)
        if replay is not None:
            return replay
        token = None
        if request.id_number:
            token = await self._lookup_person_token(normalize_id_number(request.id_number))
            if token is None:
                raise NotFound("SUBJECT_NOT_FOUND", "no such subject")

        def work(session: Session) -> pb.ProposeStatusChangeResponse:
            def propose() -> pb.ProposeStatusChangeResponse:
                if token is not None:
                    found = store.person_by_token(session, token)
                    if found is None:
                        raise NotFound("SUBJECT_NOT_FOUND", "no such subject")
                    store.require_division(principal, found.division_code)
                    person = found
                else:
                    person = store.get_person(session, principal, subject_id)
                change = store.propose_status_change(
                    session,
                    principal,
                    person,
                    request.color,
                    legal_basis,
                    request.duration_days,
                    utcnow(),
                )
                return pb.ProposeStatusChangeResponse(change=change_to_proto(change, person))

            return idempotency.once(
                session, principal.id, method, request, pb.ProposeStatusChangeResponse, propose
            )

        return await self._guard(principal, "ProposeStatusChange", subject_id, self._run(work))

    async def ReviewStatusChange(
        self, request: pb.ReviewStatusChangeRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReviewStatusChangeResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        change_id = _id(request.change_id, "change_id", violations, required=True)
        comment = _text(request.comment, "comment", 0, 500, violations)
        _raise_if(violations)

        def work(session: Session) -> pb.ReviewStatusChangeResponse:
            change, person = store.review_status_change(
                session, principal, change_id, request.approve, comment, utcnow()
            )
            return pb.ReviewStatusChangeResponse(change=change_to_proto(change, person))

        return await self._guard(principal, "ReviewStatusChange", change_id, self._run(work))

    async def ListStatusChanges(
        self, request: pb.ListStatusChangesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListStatusChangesResponse:
        principal = current_principal()
        state: str | None = None
        if request.state != pb.STATUS_CHANGE_STATE_UNSPECIFIED:
            state = _STATE_NAMES.get(request.state)
            if state is None:
                raise invalid("state", "must be a status change state")
        limit = paging.page_size(request.page_size)
        cursor = paging.decode_token(request.page_token)

        def work(session: Session) -> pb.ListStatusChangesResponse:
            rows, nxt = store.list_status_changes(
                session, principal, state, limit, cursor, utcnow()
            )
            return pb.ListStatusChangesResponse(
                changes=[change_to_proto(c, p) for c, p in rows],
                next_page_token=paging.encode_token(nxt) if nxt else "",
            )

        return await self._run(work)

    # --- corrections ---

    async def ListCorrections(
        self, request: pb.ListCorrectionsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ListCorrectionsResponse:
        principal = current_principal()
        limit = paging.page_size(request.page_size)
        cursor = paging.decode_token(request.page_token)

        def work(session: Session) -> pb.ListCorrectionsResponse:
            rows, nxt = store.list_corrections(
                session, principal, request.pending_only, limit, cursor, utcnow()
            )
            return pb.ListCorrectionsResponse(
                corrections=[correction_to_proto(c, p) for c, p in rows],
                next_page_token=paging.encode_token(nxt) if nxt else "",
            )

        return await self._run(work)

    async def ReviewCorrection(
        self, request: pb.ReviewCorrectionRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.ReviewCorrectionResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        correction_id = _id(request.correction_id, "correction_id", violations, required=True)
        comment = _text(request.comment, "comment", 1, 500, violations)
        _raise_if(violations)

        def work(session: Session) -> pb.ReviewCorrectionResponse:
            correction, person = store.review_correction(
                session, principal, correction_id, request.accept, comment, utcnow()
            )
            return pb.ReviewCorrectionResponse(correction=correction_to_proto(correction, person))

        return await self._guard(principal, "ReviewCorrection", correction_id, self._run(work))

    # --- passages for investigation ---

    async def QueryPassages(  # noqa: PLR0915 - gRPC method name; validation is long
        self, request: pb.QueryPassagesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.QueryPassagesResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        given = [f for f in ("id_number", "subject_id", "checkpoint_id") if getattr(request, f)]
        if len(given) != 1:
            violations.append(
                FieldViolation(
                    "subject_id", "give exactly one of id_number, subject_id, checkpoint_id"
                )
            )
        if request.id_number and not is_valid_id_number(request.id_number):
            violations.append(FieldViolation("id_number", "is not a valid ID number"))
        subject_id = _id(request.subject_id, "subject_id", violations, required=False)
        checkpoint_id = _id(request.checkpoint_id, "checkpoint_id", violations, required=False)
        start = end = None
        try:
            start = from_timestamp(request.start_time, "start_time", required=True)
        except InvalidArgument as err:
            violations.extend(err.violations)
        try:
            end = from_timestamp(request.end_time, "end_time", required=True)
        except InvalidArgument as err:
            violations.extend(err.violations)
        if start is not None and end is not None:
            if end <= start:
                violations.append(FieldViolation("end_time", "must be after start_time"))
            elif end - start > MAX_QUERY_WINDOW:
                violations.append(FieldViolation("end_time", "the window must be at most 31 days"))
        purpose = _text(request.purpose, "purpose", 1, 200, violations)
        try:
            limit = paging.page_size(request.page_size)
        except InvalidArgument as err:
            violations.extend(err.violations)
        _raise_if(violations)
        assert start is not None
        assert end is not None
        cursor = paging.decode_token(request.page_token)
        person_id: str | None = subject_id or None
        audit_target = subject_id or checkpoint_id
        unknown = False
        token: str | None = None
        if request.id_number:
            token = await self._lookup_person_token(normalize_id_number(request.id_number))
            audit_target = "id_number"
            if token is None:
                unknown = True

        def work(session: Session) -> pb.QueryPassagesResponse:
            nonlocal person_id, audit_target, unknown
            now = utcnow()
            if token is not None:
                found = store.person_by_token(session, token)
                if found is None:
                    unknown = True
                else:
                    person_id = found.id
                    audit_target = found.id
            if unknown:
                # Nobody with that ID number passed anywhere; the query itself is still audited.
                store.audit(session, principal, "QueryPassages", audit_target, purpose, now=now)
                return pb.QueryPassagesResponse()
            if person_id is not None and session.get(Person, person_id) is None:
                raise NotFound("SUBJECT_NOT_FOUND", "no such subject")
            rows, nxt = store.query_passages(
                session,
                principal,
                person_id=person_id,
                checkpoint_id=checkpoint_id or None,
                start=start,
                end=end,
                purpose=purpose,
                limit=limit,
                cursor=cursor,
                now=now,
                audit_target=audit_target,
            )
            return pb.QueryPassagesResponse(
                passages=[passage_to_proto(p, person, cp) for p, person, cp in rows],
                next_page_token=paging.encode_token(nxt) if nxt else "",
            )

        return await self._guard(principal, "QueryPassages", audit_target, self._run(work))

    # --- retention ---

    async def GetRetentionSettings(
        self, request: pb.GetRetentionSettingsRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.GetRetentionSettingsResponse:
        principal = current_principal()
        default = self.platform.settings.retention_days

        def work(session: Session) -> pb.GetRetentionSettingsResponse:
            passage_days, declaration_days = store.retention_days(session, default)
            store.audit(session, principal, "GetRetentionSettings", now=utcnow())
            return pb.GetRetentionSettingsResponse(
                settings=pb.RetentionSettings(
                    passage_days=passage_days, declaration_days=declaration_days
                )
            )

        return await self._run(work)

    async def UpdateRetentionSettings(
        self,
        request: pb.UpdateRetentionSettingsRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> pb.UpdateRetentionSettingsResponse:
        principal = current_principal()
        violations: list[FieldViolation] = []
        wanted = request.settings
        _days(wanted.passage_days, "settings.passage_days", 1, 365, violations)
        _days(wanted.declaration_days, "settings.declaration_days", 1, 365, violations)
        _raise_if(violations)
        await self._run(
            store.set_retention_days,
            principal,
            wanted.passage_days,
            wanted.declaration_days,
            utcnow(),
        )
        return pb.UpdateRetentionSettingsResponse(
            settings=pb.RetentionSettings(
                passage_days=wanted.passage_days, declaration_days=wanted.declaration_days
            )
        )

    # --- keys and revocation ---

    async def RotateIssuerKey(
        self, request: pb.RotateIssuerKeyRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RotateIssuerKeyResponse:
        principal = current_principal()
        new_kid, retired_kid = await self.platform.keys.rotate()
        await self._run(
            lambda s: store.audit(
                s, principal, "RotateIssuerKey", new_kid, retired_kid, now=utcnow()
            )
        )
        log.info("issuer key rotated", kid=new_kid, retired_kid=retired_kid)
        return pb.RotateIssuerKeyResponse(kid=new_kid, retired_kid=retired_kid)

    async def RevokeOfflineCodes(
        self, request: pb.RevokeOfflineCodesRequest, context: grpc.aio.ServicerContext[Any, Any]
    ) -> pb.RevokeOfflineCodesResponse:
        from healthcode.server.codes.keystore import (
            revoke_person_offline_codes,
        )

        principal = current_principal()
        violations: list[FieldViolation] = []
        subject_id = _id(request.subject_id, "subject_id", violations, required=True)
        reason = _text(request.reason, "reason", 1, 200, violations)
        _raise_if(violations)

        def work(session: Session) -> pb.RevokeOfflineCodesResponse:
            now = utcnow()
            person = store.get_person(session, principal, subject_id)
            count, version = revoke_person_offline_codes(session, person.id, now)
            store.audit(session, principal, "RevokeOfflineCodes", person.id, reason, now=now)
            return pb.RevokeOfflineCodesResponse(revoked=count, revocation_list_version=version)

        return await self._guard(principal, "RevokeOfflineCodes", subject_id, self._run(work))


def _request_id(value: str, violations: list[FieldViolation]) -> None:
    try:
        idempotency.check_request_id(value)
    except ServiceError as err:
        violations.extend(err.violations)


__all__ = ["AdminService", "change_to_proto", "checkpoint_to_proto", "correction_to_proto"]
