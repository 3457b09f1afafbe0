"""AuthService: SMS login, logout, token refresh, device enrolment, session introspection."""

from __future__ import annotations

import re
from typing import Any

import grpc
import structlog
from healthcode_sdk._gen.healthcode.v1 import auth_service_pb2 as pb
from healthcode_sdk._gen.healthcode.v1 import auth_service_pb2_grpc as pb_grpc
from sqlalchemy.orm import Session

from healthcode.common.errors import (
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    invalid,
)
from healthcode.common.identity import normalize_phone
from healthcode.server.auth import otp
from healthcode.server.auth.accounts import find_or_create_account
from healthcode.server.auth.models import LoginCode
from healthcode.server.auth.sessions import (
    IssuedSession,
    create_login_session,
    invalidate_session,
    revoke_session,
    rotate_refresh_token,
)
from healthcode.server.auth.tokens import hash_enrollment_code, new_token, phone_ref, token_hash
from healthcode.server.common.convert import to_timestamp
from healthcode.server.common.principal import Role, current_principal
from healthcode.server.db.base import utcnow
from healthcode.server.db.models import Account, AuthSession, Checkpoint, Device, DeviceEnrollment
from healthcode.server.platform import Platform

#: The servicer context type of every handler.
Ctx = grpc.aio.ServicerContext[Any, Any]

log = structlog.get_logger("healthcode.auth")

_CODE_RE = re.compile(r"^\d{6}$")
MAX_DEVICE_NAME = 64
MAX_TOKEN = 512


def _phone(value: str) -> str:
    phone = normalize_phone(value)
    if phone is None:
        raise invalid("phone", "must be a Chinese mobile number: 11 digits starting with 13-19")
    return phone


def _peer(context: Ctx) -> str:
    try:
        return str(context.peer() or "unknown")
    except Exception:
        return "unknown"


class AuthService(pb_grpc.AuthServiceServicer):
    """Implements ``healthcode.v1.AuthService``."""

    def __init__(self, platform: Platform) -> None:
        self._p = platform

    async def SendLoginCode(
        self, request: pb.SendLoginCodeRequest, context: Ctx
    ) -> pb.SendLoginCodeResponse:
        phone = _phone(request.phone)
        result = await self._p.db.run(
            otp.issue_code,
            secret=self._p.secret,
            settings=self._p.settings,
            phone=phone,
            peer=_peer(context),
            now=utcnow(),
        )
        if isinstance(result, ServiceError):
            raise result
        await self._p.sms.send_login_code(phone, result.code)
        log.info("login code sent")
        return pb.SendLoginCodeResponse(
            expires_in_seconds=result.expires_in_seconds,
            resend_after_seconds=result.resend_after_seconds,
        )

    async def Login(self, request: pb.LoginRequest, context: Ctx) -> pb.LoginResponse:
        phone = _phone(request.phone)
        code = request.code.strip()
        if not _CODE_RE.match(code):
            raise invalid("code", "must be the six digits of the SMS")
        now = utcnow()
        error = await self._p.db.run(
            otp.verify_code,
            secret=self._p.secret,
            settings=self._p.settings,
            phone=phone,
            code=code,
            peer=_peer(context),
            now=now,
        )
        if error is not None:
            raise error
        try:
            account, created = await find_or_create_account(self._p, phone, role=Role.RESIDENT)
        except Exception:
            # The vault or database failed after the code was consumed: give the code back.
            await self._p.db.run(_restore_code, phone_ref(self._p.secret, phone))
            raise
        if account.disabled:
            raise PermissionDenied("ACCOUNT_DISABLED", "this account is disabled")
        issued: IssuedSession = await self._p.db.run(
            create_login_session, account.id, settings=self._p.settings, now=utcnow()
        )
        log.info("login", account_id=account.id, role=account.role, new_account=created)
        return pb.LoginResponse(
            access_token=issued.access_token,
            refresh_token=issued.refresh_token,
            expire_time=to_timestamp(issued.expires_at),
            role=Role(account.role).to_proto(),
            account_id=account.id,
        )

    async def Logout(self, request: pb.LogoutRequest, context: Ctx) -> pb.LogoutResponse:
        principal = current_principal()
        await self._p.db.run(revoke_session, principal.session_id)
        invalidate_session(principal.session_id)
        log.info("logout", principal_id=principal.id)
        return pb.LogoutResponse()

    async def RefreshToken(
        self, request: pb.RefreshTokenRequest, context: Ctx
    ) -> pb.RefreshTokenResponse:
        token = request.refresh_token.strip()
        if not token:
            raise invalid("refresh_token", "is required")
        if len(token) > MAX_TOKEN:
            raise invalid("refresh_token", f"must be at most {MAX_TOKEN} characters")
        issued = await self._p.db.run(
            rotate_refresh_token, token, settings=self._p.settings, now=utcnow()
        )
        if issued is None:
            raise Unauthenticated(
                "REFRESH_TOKEN_INVALID", "the refresh token is unknown, expired or revoked"
            )
        invalidate_session(issued.session_id)
        return pb.RefreshTokenResponse(
            access_token=issued.access_token,
            refresh_token=issued.refresh_token,
            expire_time=to_timestamp(issued.expires_at),
        )

    async def EnrollDevice(
        self, request: pb.EnrollDeviceRequest, context: Ctx
    ) -> pb.EnrollDeviceResponse:
        code = request.enrollment_code.strip()
        if not code:
            raise invalid("enrollment_code", "is required")
        if len(code) > MAX_TOKEN:
            raise invalid("enrollment_code", f"must be at most {MAX_TOKEN} characters")
        name = " ".join(request.device_name.split())
        if len(name) > MAX_DEVICE_NAME or not name.isprintable():
            raise invalid("device_name", f"must be at most {MAX_DEVICE_NAME} printable characters")
        result = await self._p.db.run(_enroll, hash_enrollment_code(code), name)
        if result is None:
            raise Unauthenticated(
                "ENROLLMENT_CODE_INVALID", "the enrolment code is unknown, used or expired"
            )
        log.info("device enrolled", device_id=result.device_id, checkpoint_id=result.checkpoint_id)
        return result

    async def GetSession(
        self, request: pb.GetSessionRequest, context: Ctx
    ) -> pb.GetSessionResponse:
        principal = current_principal()
        masked_phone = ""
        if principal.role is not Role.DEVICE:
            account = await self._p.db.run(_get_account, principal.id)
            masked_phone = account.masked_phone if account else ""
        return pb.GetSessionResponse(
            account_id=principal.id,
            role=principal.role.to_proto(),
            checkpoint_id=principal.checkpoint_id or "",
            division_code=principal.division_code or "",
            masked_phone=masked_phone,
            display_name=principal.display_name if principal.role is not Role.RESIDENT else "",
        )


def _get_account(session: Session, account_id: str) -> Account | None:
    return session.get(Account, account_id)


def _restore_code(session: Session, ref: str) -> None:
    row = session.get(LoginCode, ref)
    if row is not None:
        row.used_at = None


def _enroll(session: Session, code_hash: bytes, name: str) -> pb.EnrollDeviceResponse | None:
    """Use an enrolment code: device + device session + code marked used, in one transaction."""
    now = utcnow()
    enrollment = session.get(DeviceEnrollment, code_hash, with_for_update=True)
    if enrollment is None or enrollment.used_at is not None or enrollment.expires_at <= now:
        return None
    checkpoint = session.get(Checkpoint, enrollment.checkpoint_id)
    if checkpoint is None:
        return None
    device = Device(checkpoint_id=checkpoint.id, name=name, revoked=False, created_at=now)
    session.add(device)
    session.flush()
    token = new_token()
    session.add(
        AuthSession(
            access_hash=token_hash(token),
            refresh_hash=None,
            device_id=device.id,
            expires_at=None,
            refresh_expires_at=None,
            revoked=False,
            created_at=now,
        )
    )
    enrollment.used_at = now
    return pb.EnrollDeviceResponse(
        device_id=device.id,
        device_token=token,
        checkpoint_id=checkpoint.id,
        division_code=checkpoint.division_code,
    )
