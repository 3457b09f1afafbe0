"""The SDK against the real platform (vault + server on port 0, SQLite and PostgreSQL): sync and
async clients log in, issue and verify codes, iterate pages, and fail with typed exceptions."""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator

import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from healthcode_sdk import (
    AsyncHealthCodeClient,
    CodeRejected,
    FailedPrecondition,
    HealthCodeClient,
    InvalidArgument,
    PermissionDenied,
    RateLimited,
    Unauthenticated,
    Unavailable,
)
from healthcode_sdk._gen.healthcode.v1 import (
    checkpoint_service_pb2,
    common_pb2,
    resident_service_pb2,
    verification_service_pb2,
)

from healthcode.server.common.principal import Role
from tests.fixtures import people
from tests.fixtures.platform import Stack

GREEN = common_pb2.CODE_COLOR_GREEN
ALLOW = common_pb2.PASSAGE_DECISION_ALLOW
DIVISION = "510402"


def _sdk(stack: Stack, token: str | None = None, **kwargs: object) -> HealthCodeClient:
    return HealthCodeClient(stack.server_address, token=token, **kwargs)  # type: ignore[arg-type]


def _staff(stack: Stack) -> tuple[HealthCodeClient, str]:
    """A staff SDK client at a fresh checkpoint: (client, checkpoint_id)."""
    checkpoint_id = stack.checkpoint(DIVISION, "SDK测试卡口")
    staff, _ = stack.official(Role.STAFF, division=DIVISION, checkpoint_id=checkpoint_id)
    assert staff.token is not None
    return _sdk(stack, staff.token), checkpoint_id


def _resident(stack: Stack) -> tuple[HealthCodeClient, people.Person]:
    """A registered resident as an SDK client."""
    client, person, _subject = stack.resident(people.person(DIVISION))
    assert client.token is not None
    return _sdk(stack, client.token), person


def _dead_address() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def test_login_register_issue_and_verify(platform_stack: Stack) -> None:
    stack = platform_stack
    person = people.person(DIVISION)
    with _sdk(stack) as resident:
        sent = resident.send_login_code(person.phone)
        assert sent.expires_in_seconds > 0
        login = resident.login(person.phone, stack.login_code(person.phone))
        assert resident.token == login.access_token
        assert login.role == common_pb2.ROLE_RESIDENT
        with pytest.raises(FailedPrecondition) as no_profile:
            resident.get_health_status()
        assert no_profile.value.reason == "PROFILE_REQUIRED"
        # Raw stubs share the token; the SDK fills in the request_id of this retry-safe write.
        profile = resident.stubs.residents.RegisterProfile(
            resident_service_pb2.RegisterProfileRequest(
                identity=resident_service_pb2.PersonIdentity(
                    name=person.name, id_number=person.id_number
                ),
                division_code=person.division_code,
                address=person.address,
            )
        ).profile
        assert profile.subject_id
        assert resident.get_health_status().status.color == GREEN
        issued = resident.issue_code().code
    assert issued.code.startswith("JKM1:")

    staff, checkpoint_id = _staff(stack)
    with staff:
        verified = staff.verify_code(issued.code, temperature_celsius=36.5)
        assert verified.color == GREEN
        assert verified.decision == ALLOW
        assert verified.passage_id
        # The same scan id is recorded once.
        first = staff.verify_code(issued.code, request_id="sdk-scan-1")
        again = staff.verify_code(issued.code, request_id="sdk-scan-1")
        assert again.passage_id == first.passage_id != verified.passage_id
        batch = staff.batch_verify_codes([issued.code, "XYZ"]).results
        assert [r.valid for r in batch] == [True, False]
        assert batch[1].reason == "CODE_BAD_PREFIX"
        assert {p.checkpoint_id for p in staff.iter_passages()} == {checkpoint_id}


@pytest.mark.parametrize(
    ("code", "reason"), [("JKM1:!!!", "CODE_BAD_BASE45"), ("XYZ", "CODE_BAD_PREFIX")]
)
def test_garbage_code_is_rejected_with_its_reason(
    platform_stack: Stack, code: str, reason: str
) -> None:
    staff, _ = _staff(platform_stack)
    with staff, pytest.raises(CodeRejected) as rejected:
        staff.verify_code(code)
    err = rejected.value
    assert isinstance(err, InvalidArgument)
    assert err.reason == reason
    assert err.domain
    assert [f for f, _ in err.field_violations] == ["code"]
    assert reason in str(err)


def test_invalid_argument_names_the_fields(platform_stack: Stack) -> None:
    staff, _ = _staff(platform_stack)
    with staff, pytest.raises(InvalidArgument) as bad:
        staff.verify_code("JKM1:ABC", temperature_celsius=50.0)
    assert not isinstance(bad.value, CodeRejected)
    assert [f for f, _ in bad.value.field_violations] == ["temperature_celsius"]
    with _sdk(platform_stack) as anon, pytest.raises(InvalidArgument) as phone:
        anon.send_login_code("12345")
    assert [f for f, _ in phone.value.field_violations] == ["phone"]
    with pytest.raises(ValueError, match="page_size"):
        staff.iter_passages(page_size=-1)


def test_unauthenticated_and_permission_denied(platform_stack: Stack) -> None:
    with _sdk(platform_stack) as anon:
        with pytest.raises(Unauthenticated):
            anon.issue_code()
        anon.token = "not-a-token"
        with pytest.raises(Unauthenticated):
            anon.get_health_status()
        # Public reads need no token.
        anon.token = None
        trust = anon.get_trust_list()
        assert trust.keys and trust.signed_trust_list
        assert anon.get_revocation_list().signed_revocation_list
    resident, _ = _resident(platform_stack)
    with resident, pytest.raises(PermissionDenied):
        resident.verify_code("XYZ")


def test_rate_limited_carries_retry_after(platform_stack: Stack) -> None:
    phone = people.phone()
    with _sdk(platform_stack) as anon:
        anon.send_login_code(phone)
        with pytest.raises(RateLimited) as limited:
            anon.send_login_code(phone)
    assert limited.value.reason == "LOGIN_CODE_RESEND_TOO_SOON"
    assert limited.value.retry_after is not None and limited.value.retry_after > 0


def test_query_status_by_identity(platform_stack: Stack) -> None:
    _, person = _resident(platform_stack)
    authority, _ = platform_stack.official(Role.HEALTH_AUTHORITY)
    with _sdk(platform_stack, authority.token) as client:
        status = client.query_status_by_identity(person.id_number, "跨省互认核验")
        assert status.found and status.color == GREEN
        with pytest.raises(InvalidArgument) as bad:
            client.query_status_by_identity("123", "跨省互认核验")
    assert [f for f, _ in bad.value.field_violations] == ["id_number"]


def test_page_iterators_follow_next_page_token(platform_stack: Stack) -> None:
    resident, _ = _resident(platform_stack)
    staff, checkpoint_id = _staff(platform_stack)
    with resident, staff:
        code = resident.issue_code().code.code
        recorded = {staff.verify_code(code).passage_id for _ in range(3)}
        assert len(recorded) == 3
        first_page = resident.stubs.residents.ListMyPassages(
            resident_service_pb2.ListMyPassagesRequest(page_size=2)
        )
        assert len(first_page.passages) == 2 and first_page.next_page_token  # > 1 page
        mine = list(resident.iter_my_passages(page_size=2))
        assert {p.passage_id for p in mine} == recorded
        assert len(mine) == 3
        at_gate = list(staff.iter_passages(page_size=2))
        assert {p.passage_id for p in at_gate} == recorded
        assert {p.checkpoint_id for p in at_gate} == {checkpoint_id}


def test_dead_address_is_unavailable_within_the_deadline() -> None:
    with HealthCodeClient(_dead_address(), timeout=3.0) as client:
        with pytest.raises(Unavailable):
            client.get_trust_list()  # retried, then given up
        with pytest.raises(Unavailable):
            client.send_login_code("19900000000")  # not retried


async def test_async_client(platform_stack: Stack) -> None:
    stack = platform_stack
    sync_resident, _ = _resident(stack)
    sync_staff, _ = _staff(stack)
    resident_token, staff_token = sync_resident.token, sync_staff.token
    sync_resident.close()
    sync_staff.close()
    async with (
        AsyncHealthCodeClient(stack.server_address, token=resident_token) as resident,
        AsyncHealthCodeClient(stack.server_address, token=staff_token) as staff,
    ):
        issued = (await resident.issue_code()).code
        verified = await staff.verify_code(issued.code)
        assert verified.color == GREEN and verified.decision == ALLOW
        await staff.verify_code(issued.code)
        await staff.verify_code(issued.code)
        mine = [p.passage_id async for p in resident.iter_my_passages(page_size=2)]
        assert len(mine) == 3 and verified.passage_id in mine
        at_gate = [p.passage_id async for p in staff.iter_passages(page_size=2)]
        assert sorted(at_gate) == sorted(mine)
        assert (await resident.get_health_status()).status.color == GREEN
        with pytest.raises(CodeRejected) as rejected:
            await staff.verify_code("JKM1:!!!")
        assert rejected.value.reason == "CODE_BAD_BASE45"
        with pytest.raises(CodeRejected) as prefix:
            await staff.stubs.verification.VerifyCode(
                verification_service_pb2.VerifyCodeRequest(code="XYZ")
            )
        assert prefix.value.reason == "CODE_BAD_PREFIX"
        assert (await staff.batch_verify_codes([issued.code])).results[0].valid
        assert (await staff.get_trust_list()).keys
        assert (await staff.get_revocation_list()).signed_revocation_list
    async with AsyncHealthCodeClient(stack.server_address) as anon:
        with pytest.raises(Unauthenticated):
            await anon.issue_code()
        with pytest.raises(InvalidArgument) as bad:
            await anon.send_login_code("12345")
        assert [f for f, _ in bad.value.field_violations] == ["phone"]


async def test_async_dead_address_is_unavailable() -> None:
    async with AsyncHealthCodeClient(_dead_address(), timeout=3.0) as client:
        with pytest.raises(Unavailable):
            await client.get_trust_list()


def _scans(code: str, scan_id: str) -> checkpoint_service_pb2.StreamScansRequest:
    scan_time = Timestamp()
    scan_time.GetCurrentTime()
    return checkpoint_service_pb2.StreamScansRequest(
        scans=[
            checkpoint_service_pb2.Scan(
                scan_id=scan_id,
                scan_time=scan_time,
                direction=common_pb2.PASSAGE_DIRECTION_ENTRY,
                method=common_pb2.PASSAGE_METHOD_QR_CODE,
                code=code,
            )
        ]
    )


def test_streaming_stubs_share_token_and_error_translation(platform_stack: Stack) -> None:
    resident, _ = _resident(platform_stack)
    staff, _ = _staff(platform_stack)
    with resident, staff:
        code = resident.issue_code().code.code
        replies = list(staff.stubs.checkpoints.StreamScans(iter([_scans(code, "sdk-stream-1")])))
        [decision] = replies[0].decisions
        assert decision.ack == checkpoint_service_pb2.SCAN_ACK_RECORDED
        assert decision.color == GREEN
        with pytest.raises(InvalidArgument) as bad:
            list(
                staff.stubs.checkpoints.StreamScans(
                    iter([checkpoint_service_pb2.StreamScansRequest()])
                )
            )
        assert [f for f, _ in bad.value.field_violations] == ["scans"]


async def test_async_streaming_stub(platform_stack: Stack) -> None:
    sync_resident, _ = _resident(platform_stack)
    sync_staff, _ = _staff(platform_stack)
    with sync_resident, sync_staff:
        code = sync_resident.issue_code().code.code
        token = sync_staff.token
    async with AsyncHealthCodeClient(platform_stack.server_address, token=token) as staff:
        call = staff.stubs.checkpoints.StreamScans()
        await call.write(_scans(code, "sdk-astream-1"))
        await call.done_writing()
        replies = [reply async for reply in call]
        assert replies[0].decisions[0].ack == checkpoint_service_pb2.SCAN_ACK_RECORDED
        bad_call = staff.stubs.checkpoints.StreamScans(
            _requests([checkpoint_service_pb2.StreamScansRequest()])
        )
        with pytest.raises(InvalidArgument):
            [reply async for reply in bad_call]


async def _requests(
    items: list[checkpoint_service_pb2.StreamScansRequest],
) -> AsyncIterator[checkpoint_service_pb2.StreamScansRequest]:
    for item in items:
        yield item
