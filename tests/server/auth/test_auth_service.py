"""AuthService over real gRPC: SMS login through the outbox, code rules, rate limits, sessions,
refresh rotation, logout and device enrolment; on SQLite and PostgreSQL with a real vault."""

from __future__ import annotations

import datetime as dt
import json

import grpc
import pytest
from healthcode_sdk._gen.healthcode.v1 import auth_service_pb2 as pb
from healthcode_sdk._gen.healthcode.v1 import common_pb2
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from healthcode.common.errors import error_info, field_violations
from healthcode.server.auth import service as auth_service
from healthcode.server.auth.models import LoginCode
from healthcode.server.auth.sessions import invalidate_account
from healthcode.server.auth.tokens import hash_enrollment_code
from healthcode.server.db.models import Account, AuthSession, Checkpoint, Device, DeviceEnrollment
from tests.fixtures import people
from tests.server.auth.stack import Stack, bearer


def _clock(monkeypatch: pytest.MonkeyPatch, start: dt.datetime) -> list[dt.datetime]:
    """Make AuthService's clock return ``now[0]``; tests move it."""
    now = [start]
    monkeypatch.setattr(auth_service, "utcnow", lambda: now[0])
    return now


def _hour_start() -> dt.datetime:
    real = dt.datetime.now(dt.UTC)
    return real.replace(minute=0, second=1, microsecond=0)


async def _expect(call: object, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    assert caught.value.code() == code, caught.value.details()
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == reason
    return caught.value


async def test_login_creates_resident_account_without_plaintext_phone(stack: Stack) -> None:
    phone = people.phone()
    sent = await stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=f"+86 {phone}"))
    assert sent.expires_in_seconds == 300
    assert sent.resend_after_seconds == 60
    code = stack.outbox_code(phone)
    assert code is not None and len(code) == 6 and code.isdigit()
    outbox = stack.settings.sms_outbox.read_text(encoding="utf-8")
    assert phone not in outbox
    assert json.loads(outbox.splitlines()[-1])["masked_phone"] == f"{phone[:3]}****{phone[-4:]}"

    login = await stack.auth.Login(pb.LoginRequest(phone=phone, code=code))
    assert login.role == common_pb2.ROLE_RESIDENT
    assert login.access_token and login.refresh_token
    assert login.expire_time.seconds > 0

    session = await stack.auth.GetSession(
        pb.GetSessionRequest(), metadata=bearer(login.access_token)
    )
    assert session.account_id == login.account_id
    assert session.role == common_pb2.ROLE_RESIDENT
    assert session.masked_phone == f"{phone[:3]}****{phone[-4:]}"

    def rows(s: Session) -> tuple[list[Account], list[AuthSession], list[LoginCode]]:
        return (
            list(s.scalars(select(Account))),
            list(s.scalars(select(AuthSession))),
            list(s.scalars(select(LoginCode))),
        )

    accounts, sessions, codes = await stack.db.run(rows)
    assert len(accounts) == 1
    assert accounts[0].phone_token and phone not in accounts[0].phone_token
    assert len(sessions) == 1
    assert login.access_token.encode() not in sessions[0].access_hash
    assert len(codes) == 1 and codes[0].used_at is not None
    assert phone not in codes[0].phone_ref

    # The code is single use.
    await _expect(
        stack.auth.Login(pb.LoginRequest(phone=phone, code=code)),
        grpc.StatusCode.UNAUTHENTICATED,
        "LOGIN_CODE_INVALID",
    )


async def test_second_login_finds_the_same_account(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = _clock(monkeypatch, dt.datetime.now(dt.UTC))
    phone = people.phone()
    first = await stack.login(phone)
    now[0] += dt.timedelta(seconds=61)
    second = await stack.login(phone)
    assert second.account_id == first.account_id
    assert second.access_token != first.access_token
    assert await stack.count(Account) == 1


async def test_same_answer_for_wrong_code_and_unknown_phone(stack: Stack) -> None:
    phone = people.phone()
    await stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=phone))
    code = stack.outbox_code(phone)
    assert code is not None
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    err1 = await _expect(
        stack.auth.Login(pb.LoginRequest(phone=phone, code=wrong)),
        grpc.StatusCode.UNAUTHENTICATED,
        "LOGIN_CODE_INVALID",
    )
    err2 = await _expect(
        stack.auth.Login(pb.LoginRequest(phone=people.phone(), code=wrong)),
        grpc.StatusCode.UNAUTHENTICATED,
        "LOGIN_CODE_INVALID",
    )
    assert err1.details() == err2.details()
    assert await stack.count(Account) == 0
    # The right code still works after one wrong try.
    login = await stack.auth.Login(pb.LoginRequest(phone=phone, code=code))
    assert login.account_id


async def test_code_dies_after_max_attempts(stack: Stack) -> None:
    phone = people.phone()
    await stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=phone))
    code = stack.outbox_code(phone)
    assert code is not None
    wrong = f"{(int(code) + 7) % 1_000_000:06d}"
    for _ in range(stack.settings.otp_max_attempts):
        await _expect(
            stack.auth.Login(pb.LoginRequest(phone=phone, code=wrong)),
            grpc.StatusCode.UNAUTHENTICATED,
            "LOGIN_CODE_INVALID",
        )
    await _expect(
        stack.auth.Login(pb.LoginRequest(phone=phone, code=code)),
        grpc.StatusCode.UNAUTHENTICATED,
        "LOGIN_CODE_INVALID",
    )
    assert await stack.count(Account) == 0
    assert await stack.count(AuthSession) == 0


async def test_code_expires(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    now = _clock(monkeypatch, dt.datetime.now(dt.UTC))
    phone = people.phone()
    await stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=phone))
    code = stack.outbox_code(phone)
    assert code is not None
    now[0] += dt.timedelta(seconds=stack.settings.otp_seconds + 1)
    await _expect(
        stack.auth.Login(pb.LoginRequest(phone=phone, code=code)),
        grpc.StatusCode.UNAUTHENTICATED,
        "LOGIN_CODE_INVALID",
    )
    assert await stack.count(AuthSession) == 0


async def test_resend_throttle_and_new_code_replaces_old(
    stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = _clock(monkeypatch, dt.datetime.now(dt.UTC))
    phone = people.phone()
    await stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=phone))
    first = stack.outbox_code(phone)
    err = await _expect(
        stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=phone)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LOGIN_CODE_RESEND_TOO_SOON",
    )
    info = error_info(err)
    assert info is not None and 0 < int(info.metadata["retry_after_s"]) <= 60
    now[0] += dt.timedelta(seconds=61)
    await stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=phone))
    second = stack.outbox_code(phone)
    assert second is not None and first is not None
    if first != second:
        await _expect(
            stack.auth.Login(pb.LoginRequest(phone=phone, code=first)),
            grpc.StatusCode.UNAUTHENTICATED,
            "LOGIN_CODE_INVALID",
        )
    assert (await stack.auth.Login(pb.LoginRequest(phone=phone, code=second))).account_id


async def test_rate_limit_per_phone(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    now = _clock(monkeypatch, _hour_start())
    phone = people.phone()
    for _ in range(stack.settings.otp_per_phone_per_hour):
        await stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=phone))
        now[0] += dt.timedelta(seconds=61)
    await _expect(
        stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=phone)),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LOGIN_CODE_RATE_LIMITED",
    )
    # Another phone from the same peer is still served; the next hour the phone is again.
    await stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=people.phone()))
    now[0] += dt.timedelta(hours=1)
    await stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=phone))


async def test_rate_limit_per_peer(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    _clock(monkeypatch, _hour_start())
    for _ in range(stack.settings.otp_per_peer_per_hour):
        await stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=people.phone()))
    await _expect(
        stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone=people.phone())),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LOGIN_CODE_RATE_LIMITED",
    )


async def test_login_rate_limit_per_peer(stack: Stack, monkeypatch: pytest.MonkeyPatch) -> None:
    start = dt.datetime.now(dt.UTC).replace(second=0, microsecond=0)
    _clock(monkeypatch, start)
    phone = people.phone()
    for _ in range(stack.settings.login_per_peer_per_minute):
        await _expect(
            stack.auth.Login(pb.LoginRequest(phone=phone, code="000000")),
            grpc.StatusCode.UNAUTHENTICATED,
            "LOGIN_CODE_INVALID",
        )
    await _expect(
        stack.auth.Login(pb.LoginRequest(phone=phone, code="000000")),
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "LOGIN_RATE_LIMITED",
    )


async def test_bad_input_names_the_field_and_writes_nothing(stack: Stack) -> None:
    err = await _expect(
        stack.auth.SendLoginCode(pb.SendLoginCodeRequest(phone="12345")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert field_violations(err) == ["phone"]
    err = await _expect(
        stack.auth.Login(pb.LoginRequest(phone=people.phone(), code="12ab")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert field_violations(err) == ["code"]
    err = await _expect(
        stack.auth.RefreshToken(pb.RefreshTokenRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert field_violations(err) == ["refresh_token"]
    err = await _expect(
        stack.auth.EnrollDevice(pb.EnrollDeviceRequest()),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert field_violations(err) == ["enrollment_code"]
    assert await stack.count(LoginCode) == 0
    assert await stack.count(Account) == 0
    await _expect(
        stack.auth.GetSession(pb.GetSessionRequest()),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )


async def test_refresh_rotates_and_kills_old_tokens(stack: Stack) -> None:
    login = await stack.login(people.phone())
    refreshed = await stack.auth.RefreshToken(
        pb.RefreshTokenRequest(refresh_token=login.refresh_token)
    )
    assert refreshed.access_token != login.access_token
    assert refreshed.refresh_token != login.refresh_token
    await _expect(
        stack.auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )
    await _expect(
        stack.auth.GetSession(pb.GetSessionRequest(), metadata=bearer(login.access_token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    who = await stack.auth.GetSession(
        pb.GetSessionRequest(), metadata=bearer(refreshed.access_token)
    )
    assert who.account_id == login.account_id


async def test_logout_revokes_at_once(stack: Stack) -> None:
    login = await stack.login(people.phone())
    meta = bearer(login.access_token)
    await stack.auth.GetSession(pb.GetSessionRequest(), metadata=meta)  # now cached
    await stack.auth.Logout(pb.LogoutRequest(), metadata=meta)
    await _expect(
        stack.auth.GetSession(pb.GetSessionRequest(), metadata=meta),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    await _expect(
        stack.auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )


async def test_disabled_account_is_refused(stack: Stack) -> None:
    phone = people.phone()
    login = await stack.login(phone)

    def disable(s: Session) -> None:
        s.execute(update(Account).where(Account.id == login.account_id).values(disabled=True))

    await stack.db.run(disable)
    invalidate_account(login.account_id)  # other replicas: within the cache TTL
    await _expect(
        stack.auth.GetSession(pb.GetSessionRequest(), metadata=bearer(login.access_token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "UNAUTHENTICATED",
    )
    await _expect(
        stack.auth.RefreshToken(pb.RefreshTokenRequest(refresh_token=login.refresh_token)),
        grpc.StatusCode.UNAUTHENTICATED,
        "REFRESH_TOKEN_INVALID",
    )


async def _checkpoint_with_code(stack: Stack, code: str, *, expires: dt.datetime) -> str:
    def run(s: Session) -> str:
        cp = Checkpoint(name="炳草岗东门", division_code="510402")
        s.add(cp)
        s.flush()
        s.add(
            DeviceEnrollment(
                code_hash=hash_enrollment_code(code),
                checkpoint_id=cp.id,
                created_by="test",
                expires_at=expires,
            )
        )
        return cp.id

    return await stack.db.run(run)


async def test_device_enrolment_is_single_use(stack: Stack) -> None:
    code = "enrol-" + "x" * 20
    checkpoint_id = await _checkpoint_with_code(
        stack, code, expires=dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    )
    enrolled = await stack.auth.EnrollDevice(
        pb.EnrollDeviceRequest(enrollment_code=code, device_name="gate-1")
    )
    assert enrolled.checkpoint_id == checkpoint_id
    assert enrolled.division_code == "510402"
    who = await stack.auth.GetSession(
        pb.GetSessionRequest(), metadata=bearer(enrolled.device_token)
    )
    assert who.role == common_pb2.ROLE_DEVICE
    assert who.account_id == enrolled.device_id
    assert who.checkpoint_id == checkpoint_id
    assert who.division_code == "510402"
    await _expect(
        stack.auth.EnrollDevice(pb.EnrollDeviceRequest(enrollment_code=code)),
        grpc.StatusCode.UNAUTHENTICATED,
        "ENROLLMENT_CODE_INVALID",
    )
    assert await stack.count(Device) == 1
    assert await stack.count(AuthSession, AuthSession.device_id.is_not(None)) == 1


async def test_expired_enrolment_code_is_refused(stack: Stack) -> None:
    code = "enrol-" + "y" * 20
    await _checkpoint_with_code(
        stack, code, expires=dt.datetime.now(dt.UTC) - dt.timedelta(seconds=1)
    )
    await _expect(
        stack.auth.EnrollDevice(pb.EnrollDeviceRequest(enrollment_code=code)),
        grpc.StatusCode.UNAUTHENTICATED,
        "ENROLLMENT_CODE_INVALID",
    )
    assert await stack.count(Device) == 0
