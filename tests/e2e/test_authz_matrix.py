"""Authorisation matrix: every RPC of every ``healthcode.v1`` service with every role, and none.

RPCs are enumerated from the generated descriptors, so a new RPC is covered without touching
this file (and ``test_policy_covers_exactly_the_descriptors`` fails until the policy lists it).
Each caller holds a real credential obtained through the real RPCs (or the bootstrap path the
CLI uses for officials). Expected outcome per (RPC, caller), from ``auth.policy.METHOD_ROLES``:

- role not allowed: PERMISSION_DENIED with reason ROLE_NOT_ALLOWED;
- no token or a garbage token on a non-public RPC: UNAUTHENTICATED;
- allowed role (or anyone on a public RPC): anything but UNAUTHENTICATED and
  PERMISSION_DENIED/ROLE_NOT_ALLOWED (an empty request may well be INVALID_ARGUMENT);
- nobody, ever: INTERNAL or UNKNOWN.

The second half pins jurisdiction: staff and a district admin of 510402 see neither residents nor
passages of 510403 and cannot propose status changes there, while their 510403 counterparts can.
"""

from __future__ import annotations

import datetime as dt
import importlib
import pkgutil
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc
import healthcode_sdk._gen.healthcode.v1 as gen_v1
import pytest
from google.protobuf import descriptor, message, message_factory
from google.protobuf.timestamp_pb2 import Timestamp
from healthcode_sdk._gen.healthcode.v1 import (
    admin_service_pb2,
    auth_service_pb2,
    checkpoint_service_pb2,
    code_service_pb2,
    common_pb2,
    resident_service_pb2,
    verification_service_pb2,
)

from healthcode.common.errors import error_info
from healthcode.server.auth.policy import METHOD_ROLES
from healthcode.server.auth.tokens import new_token, token_hash
from healthcode.server.common.principal import Role
from healthcode.server.db import utcnow
from healthcode.server.db.models import AuthSession, Passage, Person
from healthcode.server.status.models import StatusChange
from tests.fixtures import people
from tests.fixtures.platform import Client, Stack

# --- RPC enumeration and a generic caller ------------------------------------------------------


@dataclass(frozen=True)
class Rpc:
    """One RPC of a ``healthcode.v1`` service, as the descriptors describe it."""

    path: str
    method: descriptor.MethodDescriptor

    @property
    def name(self) -> str:
        """``Service/Method``."""
        return self.path.removeprefix("/healthcode.v1.")

    @property
    def request_class(self) -> type[message.Message]:
        """The generated request message class."""
        return message_factory.GetMessageClass(self.method.input_type)

    @property
    def response_class(self) -> type[message.Message]:
        """The generated response message class."""
        return message_factory.GetMessageClass(self.method.output_type)

    @property
    def bidi(self) -> bool:
        """Client and server streaming (StreamScans)."""
        return bool(self.method.client_streaming or self.method.server_streaming)


def healthcode_rpcs() -> list[Rpc]:
    """Every RPC of every service declared in a ``healthcode.v1`` generated module."""
    rpcs: dict[str, Rpc] = {}
    for info in pkgutil.iter_modules(gen_v1.__path__):
        if not info.name.endswith("_pb2"):
            continue
        module = importlib.import_module(f"{gen_v1.__name__}.{info.name}")
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                path = f"/{service.full_name}/{method.name}"
                rpcs[path] = Rpc(path, method)
    return [rpcs[p] for p in sorted(rpcs)]


RPCS = healthcode_rpcs()


def call(
    channel: grpc.Channel,
    rpc: Rpc,
    request: message.Message,
    token: str | None = None,
    *,
    timeout: float = 30,
) -> message.Message | list[message.Message]:
    """Call ``rpc`` with ``request`` (streams: send it as the only message, read every reply)."""
    metadata: tuple[tuple[str, str | bytes], ...] | None = (
        (("authorization", f"Bearer {token}"),) if token is not None else None
    )
    serialize = type(request).SerializeToString
    deserialize = rpc.response_class.FromString
    if rpc.method.client_streaming and rpc.method.server_streaming:
        stub = channel.stream_stream(
            rpc.path, request_serializer=serialize, response_deserializer=deserialize
        )
        return list(stub(iter([request]), metadata=metadata, timeout=timeout))
    if rpc.method.server_streaming:
        stream = channel.unary_stream(
            rpc.path, request_serializer=serialize, response_deserializer=deserialize
        )
        return list(stream(request, metadata=metadata, timeout=timeout))
    if rpc.method.client_streaming:
        upload = channel.stream_unary(
            rpc.path, request_serializer=serialize, response_deserializer=deserialize
        )
        return upload(iter([request]), metadata=metadata, timeout=timeout)
    unary = channel.unary_unary(
        rpc.path, request_serializer=serialize, response_deserializer=deserialize
    )
    return unary(request, metadata=metadata, timeout=timeout)


@dataclass(frozen=True)
class Outcome:
    """What a call came back with."""

    code: grpc.StatusCode
    reason: str
    details: str

    def __str__(self) -> str:
        return f"{self.code.name}/{self.reason or '-'} ({self.details[:120]})"


def outcome(fn: Callable[..., object], *args: object) -> Outcome:
    """Run ``fn(*args)`` (a call); its status code, ErrorInfo reason and details."""
    try:
        fn(*args)
    except grpc.RpcError as err:
        info = error_info(err)
        return Outcome(err.code(), info.reason if info else "", err.details() or "")
    return Outcome(grpc.StatusCode.OK, "", "")


# --- callers -------------------------------------------------------------------------------


@dataclass
class Caller:
    """Someone calling the platform: a role with a real credential, or none at all."""

    label: str
    role: Role | None
    token: str | None
    #: Mints another credential of the same principal (Logout would revoke ``token``).
    fresh: Callable[[], str | None]


def session_token(
    stack: Stack, *, account_id: str | None = None, device_id: str | None = None
) -> str:
    """A new access token for an existing account or device (a second login, without SMS)."""
    token = new_token()
    expires = None if device_id else utcnow() + dt.timedelta(hours=1)

    def add(session: Any) -> None:
        session.add(
            AuthSession(
                access_hash=token_hash(token),
                refresh_hash=None,
                account_id=account_id,
                device_id=device_id,
                expires_at=expires,
                refresh_expires_at=None,
                revoked=False,
                created_at=utcnow(),
            )
        )

    stack.db(add)
    return token


def login(stack: Stack, phone: str) -> auth_service_pb2.LoginResponse:
    """Phone + SMS login on a channel of its own: per-peer rate limits do not accumulate."""
    with grpc.insecure_channel(stack.server_address) as channel:
        anon = Client(channel)
        anon.auth.SendLoginCode(auth_service_pb2.SendLoginCodeRequest(phone=phone))
        return anon.auth.Login(
            auth_service_pb2.LoginRequest(phone=phone, code=stack.login_code(phone))
        )


def official(
    stack: Stack, role: Role, *, division: str | None = None, checkpoint_id: str | None = None
) -> tuple[Client, str]:
    """A logged-in official (created the way ``healthcode admin`` creates them)."""
    from healthcode.server.auth.bootstrap import create_staff_account

    phone = people.phone()
    account_id = stack.run(
        create_staff_account(
            stack.platform, phone, f"测试{role.value}", role, checkpoint_id, division
        )
    )
    return stack.client(login(stack, phone).access_token), account_id


def resident(stack: Stack, person: people.Person) -> tuple[Client, str, str]:
    """A logged-in, registered resident: (client, account_id, subject_id)."""
    reply = login(stack, person.phone)
    client = stack.client(reply.access_token)
    profile = client.residents.RegisterProfile(
        resident_service_pb2.RegisterProfileRequest(
            request_id=secrets.token_hex(8),
            identity=resident_service_pb2.PersonIdentity(
                name=person.name, id_number=person.id_number
            ),
            division_code=person.division_code,
            address=person.address,
        )
    ).profile
    return client, reply.account_id, profile.subject_id


def service_account(stack: Stack, health: Client, role: Role) -> tuple[str, str]:
    """A partner/provincial account created by a health authority: (credential, account_id)."""
    reply = health.admin.CreateServiceAccount(
        admin_service_pb2.CreateServiceAccountRequest(
            request_id=secrets.token_hex(8), role=role.to_proto(), name=f"测试{role.value}"
        )
    )
    assert reply.credential
    return reply.credential, reply.account_id


def enrolled_device(stack: Stack, admin: Client, checkpoint_id: str) -> tuple[str, str]:
    """A device enrolled at a checkpoint through the real RPCs: (device token, device id)."""
    code = admin.admin.CreateDeviceEnrollment(
        admin_service_pb2.CreateDeviceEnrollmentRequest(checkpoint_id=checkpoint_id)
    ).enrollment_code
    reply = stack.client().auth.EnrollDevice(
        auth_service_pb2.EnrollDeviceRequest(enrollment_code=code, device_name="测试闸机 1")
    )
    assert reply.checkpoint_id == checkpoint_id
    return reply.device_token, reply.device_id


def all_callers(stack: Stack) -> dict[str, Caller]:
    """One caller per role (all bound to 510402 where a binding applies), plus none and garbage."""
    checkpoint = stack.checkpoint("510402", "测试矩阵卡口")
    callers: dict[str, Caller] = {}

    def add(role: Role, token: str, **owner: str) -> None:
        callers[role.value] = Caller(role.value, role, token, lambda: session_token(stack, **owner))

    client, account_id, _ = resident(stack, people.person("510402"))
    add(Role.RESIDENT, client.token or "", account_id=account_id)
    client, account_id = official(stack, Role.STAFF, checkpoint_id=checkpoint)
    add(Role.STAFF, client.token or "", account_id=account_id)
    district, account_id = official(stack, Role.DISTRICT_ADMIN, division="510402")
    add(Role.DISTRICT_ADMIN, district.token or "", account_id=account_id)
    health, account_id = official(stack, Role.HEALTH_AUTHORITY)
    add(Role.HEALTH_AUTHORITY, health.token or "", account_id=account_id)
    client, account_id = official(stack, Role.SECURITY_OFFICER)
    add(Role.SECURITY_OFFICER, client.token or "", account_id=account_id)
    for role in (Role.PARTNER, Role.PROVINCIAL):
        credential, account_id = service_account(stack, health, role)
        add(role, credential, account_id=account_id)
    token, device_id = enrolled_device(stack, district, checkpoint)
    add(Role.DEVICE, token, device_id=device_id)
    callers["none"] = Caller("none", None, None, lambda: None)
    garbage = "garbage-" + secrets.token_urlsafe(24)
    callers["garbage"] = Caller("garbage", None, garbage, lambda: garbage)
    return callers


@pytest.fixture(scope="module")
def callers(platform_stack: Stack) -> dict[str, Caller]:
    """Every role with a real credential, plus no token and a garbage token."""
    return all_callers(platform_stack)


# --- the matrix ----------------------------------------------------------------------------


def test_policy_covers_exactly_the_descriptors() -> None:
    """METHOD_ROLES lists every RPC of the protos and nothing else."""
    declared = {rpc.path for rpc in RPCS}
    listed = {m for m in METHOD_ROLES if m.startswith("/healthcode.v1.")}
    assert declared - listed == set(), "RPCs missing from METHOD_ROLES (refused for everyone)"
    assert listed - declared == set(), "METHOD_ROLES lists RPCs that no proto declares"
    assert set(METHOD_ROLES) == listed, "METHOD_ROLES lists methods outside healthcode.v1"
    assert len(RPCS) >= 45, "descriptor enumeration found too few RPCs"


def test_every_role_has_a_caller(callers: dict[str, Caller]) -> None:
    """The matrix really runs with every role of DESIGN.md section 5."""
    assert {c.role for c in callers.values() if c.role} == set(Role)
    assert len({c.token for c in callers.values() if c.token}) == len(Role) + 1


def expected_violation(rpc: Rpc, caller: Caller, got: Outcome) -> str | None:
    """Why ``got`` is wrong for ``caller`` on ``rpc``; None when it is right."""
    roles = METHOD_ROLES[rpc.path]
    if got.code in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN):
        return f"got {got}"
    if not roles:  # public: everyone, with or without a token, reaches the handler
        allowed = True
    elif caller.role is None:
        if got.code is not grpc.StatusCode.UNAUTHENTICATED:
            return f"expected UNAUTHENTICATED, got {got}"
        return None
    else:
        allowed = caller.role in roles
    if allowed:
        if got.code is grpc.StatusCode.UNAUTHENTICATED and rpc.path not in _PUBLIC_AUTH_RPCS:
            return f"allowed but got {got}"
        if got.code is grpc.StatusCode.PERMISSION_DENIED and got.reason == "ROLE_NOT_ALLOWED":
            return f"allowed but got {got}"
        return None
    if (got.code, got.reason) != (grpc.StatusCode.PERMISSION_DENIED, "ROLE_NOT_ALLOWED"):
        return f"expected PERMISSION_DENIED/ROLE_NOT_ALLOWED, got {got}"
    return None


#: Public RPCs whose *subject* is a credential: an empty/unknown one is UNAUTHENTICATED by design.
_PUBLIC_AUTH_RPCS = frozenset(
    {"/healthcode.v1.AuthService/RefreshToken", "/healthcode.v1.AuthService/EnrollDevice"}
)


@pytest.mark.parametrize("rpc", RPCS, ids=[r.name for r in RPCS])
def test_every_role_on_every_rpc(
    platform_stack: Stack, callers: dict[str, Caller], rpc: Rpc
) -> None:
    """Each caller, with an empty request: only the roles of METHOD_ROLES get past the door."""
    problems: list[str] = []
    channel = platform_stack.client().channel
    for caller in callers.values():
        # Logout revokes the session it is called with: spend a second credential on it.
        token = caller.fresh() if rpc.method.name == "Logout" else caller.token
        got = outcome(call, channel, rpc, rpc.request_class(), token)
        problem = expected_violation(rpc, caller, got)
        if problem:
            problems.append(f"{rpc.name} as {caller.label}: {problem}")
    assert not problems, "\n".join(problems)


def test_unknown_method_is_refused_cleanly(
    platform_stack: Stack, callers: dict[str, Caller]
) -> None:
    """A method no service implements: UNIMPLEMENTED or PERMISSION_DENIED, never INTERNAL."""
    ghost = Rpc("/healthcode.v1.AuthService/NoSuchMethod", RPCS[0].method)
    channel = platform_stack.client().channel
    for token in (None, callers["health_authority"].token):
        got = outcome(call, channel, ghost, ghost.request_class(), token)
        assert got.code in (grpc.StatusCode.UNIMPLEMENTED, grpc.StatusCode.PERMISSION_DENIED), got


def test_logged_out_token_is_unauthenticated(
    platform_stack: Stack, callers: dict[str, Caller]
) -> None:
    """After Logout the credential no longer opens anything."""
    token = callers["staff"].fresh()
    client = platform_stack.client(token)
    assert (
        client.auth.GetSession(auth_service_pb2.GetSessionRequest()).role == common_pb2.ROLE_STAFF
    )
    client.auth.Logout(auth_service_pb2.LogoutRequest())
    got = outcome(client.auth.GetSession, auth_service_pb2.GetSessionRequest())
    assert got.code is grpc.StatusCode.UNAUTHENTICATED, got
    got = outcome(client.checkpoints.ListPassages, checkpoint_service_pb2.ListPassagesRequest())
    assert got.code is grpc.StatusCode.UNAUTHENTICATED, got


# --- jurisdiction --------------------------------------------------------------------------


@dataclass
class District:
    """One district's checkpoint, staff, district admin and the people seen there."""

    code: str
    checkpoint_id: str
    staff: Client
    admin: Client
    #: A resident without a smartphone, added by the district's staff (managed).
    managed_subject: str
    managed_person: people.Person
    #: A resident with the app whose code was verified at the district's checkpoint.
    app_subject: str
    app_person: people.Person
    #: A person registered at the checkpoint from an ID card (no account at all).
    card_person: people.Person
    passage_ids: list[str]


def _identity(person: people.Person) -> resident_service_pb2.PersonIdentity:
    return resident_service_pb2.PersonIdentity(name=person.name, id_number=person.id_number)


def _setup_district(stack: Stack, code: str, health: Client) -> District:
    checkpoint_id = health.admin.CreateCheckpoint(
        admin_service_pb2.CreateCheckpointRequest(
            request_id=secrets.token_hex(8),
            name=f"测试卡口{code}",
            division_code=code,
            location="测试",
        )
    ).checkpoint.checkpoint_id
    staff, _ = official(stack, Role.STAFF, checkpoint_id=checkpoint_id)
    admin, _ = official(stack, Role.DISTRICT_ADMIN, division=code)
    # A managed resident, added by the district's staff through AddJurisdictionResident.
    managed = people.person(code)
    added = staff.checkpoints.AddJurisdictionResident(
        checkpoint_service_pb2.AddJurisdictionResidentRequest(
            request_id=secrets.token_hex(8),
            identity=_identity(managed),
            phone=managed.phone,
            address=managed.address,
        )
    ).resident
    assert added.division_code == code
    passages: list[str] = []
    # A resident with the app: issues a code, the district's staff verifies it (passage).
    app_person = people.person(code)
    app_client, _, app_subject = resident(stack, app_person)
    issued = app_client.codes.IssueCode(code_service_pb2.IssueCodeRequest()).code.code
    verified = staff.verification.VerifyCode(
        verification_service_pb2.VerifyCodeRequest(
            code=issued,
            direction=common_pb2.PASSAGE_DIRECTION_ENTRY,
            request_id=secrets.token_hex(8),
            temperature_celsius=36.5,
        )
    )
    assert verified.passage_id
    passages.append(verified.passage_id)
    # A person without an account, registered at the checkpoint from an ID card.
    card_person = people.person(code)
    registered = staff.checkpoints.RegisterByIdCard(
        checkpoint_service_pb2.RegisterByIdCardRequest(
            request_id=secrets.token_hex(8),
            id_card=checkpoint_service_pb2.IdCardData(
                name=card_person.name,
                id_number=card_person.id_number,
                id_type=common_pb2.ID_DOCUMENT_TYPE_RESIDENT,
                address=card_person.address,
            ),
            method=common_pb2.PASSAGE_METHOD_ID_MANUAL,
            direction=common_pb2.PASSAGE_DIRECTION_ENTRY,
            temperature_celsius=36.6,
        )
    )
    assert registered.passage.checkpoint_id == checkpoint_id
    passages.append(registered.passage.passage_id)
    return District(
        code=code,
        checkpoint_id=checkpoint_id,
        staff=staff,
        admin=admin,
        managed_subject=added.subject_id,
        managed_person=managed,
        app_subject=app_subject,
        app_person=app_person,
        card_person=card_person,
        passage_ids=passages,
    )


@pytest.fixture(scope="module")
def districts(platform_stack: Stack) -> tuple[District, District]:
    """Data in 510402 and 510403, set up through the real RPCs."""
    health, _ = official(platform_stack, Role.HEALTH_AUTHORITY)
    return _setup_district(platform_stack, "510402", health), _setup_district(
        platform_stack, "510403", health
    )


def _all_residents(client: Client) -> list[checkpoint_service_pb2.JurisdictionResident]:
    out: list[checkpoint_service_pb2.JurisdictionResident] = []
    token = ""
    for _ in range(100):
        page = client.checkpoints.ListJurisdictionResidents(
            checkpoint_service_pb2.ListJurisdictionResidentsRequest(page_size=50, page_token=token)
        )
        out.extend(page.residents)
        token = page.next_page_token
        if not token:
            return out
    raise AssertionError("ListJurisdictionResidents does not end")


def _all_passages(client: Client) -> list[common_pb2.Passage]:
    out: list[common_pb2.Passage] = []
    token = ""
    for _ in range(100):
        page = client.checkpoints.ListPassages(
            checkpoint_service_pb2.ListPassagesRequest(page_size=50, page_token=token)
        )
        out.extend(page.passages)
        token = page.next_page_token
        if not token:
            return out
    raise AssertionError("ListPassages does not end")


def _subjects_of(stack: Stack, district: District) -> set[str]:
    """Every person of the district in the server database (by division)."""

    def query(session: Any) -> set[str]:
        return {p.id for p in session.query(Person).filter(Person.division_code == district.code)}

    return stack.db(query)


@pytest.mark.parametrize("who", ["staff", "admin"])
def test_jurisdiction_residents(
    platform_stack: Stack, districts: tuple[District, District], who: str
) -> None:
    """Residents listed to staff/district admin are exactly those of their own division."""
    for own, other in (districts, districts[::-1]):
        listed = _all_residents(getattr(own, who))
        subjects = {r.subject_id for r in listed}
        assert {r.division_code for r in listed} == {own.code}
        assert {own.managed_subject, own.app_subject} <= subjects
        assert subjects.isdisjoint(_subjects_of(platform_stack, other))
        assert other.managed_subject not in subjects
        assert other.app_subject not in subjects
        managed = next(r for r in listed if r.subject_id == own.managed_subject)
        assert managed.managed
        # Masked identity only.
        assert managed.identity.masked_id_number != own.managed_person.id_number
        assert own.managed_person.name not in managed.identity.masked_name


def test_jurisdiction_passages_of_staff(districts: tuple[District, District]) -> None:
    """Staff list the passages of their own checkpoint only."""
    for own, other in (districts, districts[::-1]):
        listed = _all_passages(own.staff)
        ids = {p.passage_id for p in listed}
        assert set(own.passage_ids) <= ids
        assert ids.isdisjoint(other.passage_ids)
        assert {p.checkpoint_id for p in listed} == {own.checkpoint_id}


def _window() -> tuple[Timestamp, Timestamp]:
    now = dt.datetime.now(dt.UTC)
    start, end = Timestamp(), Timestamp()
    start.FromDatetime(now - dt.timedelta(days=1))
    end.FromDatetime(now + dt.timedelta(minutes=5))
    return start, end


def test_jurisdiction_passages_of_district_admin(districts: tuple[District, District]) -> None:
    """A district admin queries passages of its own division; another division's are refused."""
    start, end = _window()
    for own, other in (districts, districts[::-1]):

        def query(target: dict[str, str], admin: Client = own.admin) -> Outcome | list[str]:
            request = admin_service_pb2.QueryPassagesRequest(
                start_time=start, end_time=end, purpose="流调测试", page_size=100, **target
            )
            try:
                reply = admin.admin.QueryPassages(request)
            except grpc.RpcError as err:
                info = error_info(err)
                return Outcome(err.code(), info.reason if info else "", err.details() or "")
            return [p.passage_id for p in reply.passages]

        mine = query({"checkpoint_id": own.checkpoint_id})
        assert isinstance(mine, list) and set(own.passage_ids) <= set(mine), mine
        mine = query({"subject_id": own.app_subject})
        assert isinstance(mine, list) and own.passage_ids[0] in mine, mine
        for target in (
            {"checkpoint_id": other.checkpoint_id},
            {"subject_id": other.app_subject},
            {"id_number": other.card_person.id_number},
        ):
            got = query(target)
            if isinstance(got, list):
                # A person is followed only through passages recorded in the caller's
                # jurisdiction (they may have crossed it): an answer without the other
                # district's passages is fine; a checkpoint of another district is not.
                assert not set(got) & set(other.passage_ids), f"leak via {sorted(target)}"
                assert "checkpoint_id" not in target, "expected PERMISSION_DENIED"
            else:
                assert got.code is grpc.StatusCode.PERMISSION_DENIED, (sorted(target), str(got))


def _count(stack: Stack, model: Any) -> int:
    return int(stack.db(lambda s: s.query(model).count()))


def test_jurisdiction_status_changes(
    platform_stack: Stack, districts: tuple[District, District]
) -> None:
    """A district admin proposes changes in its own division only; nothing is written otherwise."""
    for own, other in (districts, districts[::-1]):
        before = _count(platform_stack, StatusChange)
        for target in (
            {"subject_id": other.managed_subject},
            {"subject_id": other.app_subject},
            {"id_number": other.card_person.id_number},
        ):
            got = outcome(
                own.admin.admin.ProposeStatusChange,
                admin_service_pb2.ProposeStatusChangeRequest(
                    request_id=secrets.token_hex(8),
                    color=common_pb2.CODE_COLOR_RED,
                    legal_basis="《传染病防治法》第三十九条 测试依据",
                    duration_days=7,
                    **target,
                ),
            )
            assert (got.code, got.reason) == (
                grpc.StatusCode.PERMISSION_DENIED,
                "OUTSIDE_JURISDICTION",
            ), (own.code, sorted(target), str(got))
        assert _count(platform_stack, StatusChange) == before
        # Their other-division counterpart can.
        change = other.admin.admin.ProposeStatusChange(
            admin_service_pb2.ProposeStatusChangeRequest(
                request_id=secrets.token_hex(8),
                subject_id=other.managed_subject,
                color=common_pb2.CODE_COLOR_YELLOW,
                legal_basis="《传染病防治法》第三十九条 测试依据",
                duration_days=7,
            )
        ).change
        assert change.subject_id == other.managed_subject
        assert change.state == admin_service_pb2.STATUS_CHANGE_STATE_PENDING
        assert _count(platform_stack, StatusChange) == before + 1
        # The change is visible to its own district only.
        listed = {
            c.change_id
            for c in other.admin.admin.ListStatusChanges(
                admin_service_pb2.ListStatusChangesRequest(page_size=100)
            ).changes
        }
        assert change.change_id in listed
        foreign = {
            c.change_id
            for c in own.admin.admin.ListStatusChanges(
                admin_service_pb2.ListStatusChangesRequest(page_size=100)
            ).changes
        }
        assert change.change_id not in foreign
        # ... and cannot be approved from across the border.
        got = outcome(
            own.admin.admin.ReviewStatusChange,
            admin_service_pb2.ReviewStatusChangeRequest(
                change_id=change.change_id, approve=True, comment="越权审批"
            ),
        )
        assert got.code in (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.NOT_FOUND), str(got)


def test_jurisdiction_staff_cannot_reach_other_checkpoints(
    platform_stack: Stack, districts: tuple[District, District]
) -> None:
    """Staff record passages at their own checkpoint, whatever the person's division."""
    own, other = districts
    visitor = people.person(other.code)
    reply = own.staff.checkpoints.RegisterByIdCard(
        checkpoint_service_pb2.RegisterByIdCardRequest(
            request_id=secrets.token_hex(8),
            id_card=checkpoint_service_pb2.IdCardData(
                name=visitor.name,
                id_number=visitor.id_number,
                id_type=common_pb2.ID_DOCUMENT_TYPE_RESIDENT,
                address=visitor.address,
            ),
            method=common_pb2.PASSAGE_METHOD_ID_MANUAL,
            direction=common_pb2.PASSAGE_DIRECTION_EXIT,
            temperature_celsius=36.4,
        )
    )
    assert reply.passage.checkpoint_id == own.checkpoint_id

    def where(session: Any) -> str:
        return session.get(Passage, reply.passage.passage_id).checkpoint_id  # type: ignore[no-any-return]

    assert platform_stack.db(where) == own.checkpoint_id
    # The passage shows at own checkpoint, never at the other one.
    assert reply.passage.passage_id in {p.passage_id for p in _all_passages(own.staff)}
    assert reply.passage.passage_id not in {p.passage_id for p in _all_passages(other.staff)}
