"""SMS login codes: issue, throttle, rate-limit and verify (store functions on a Session).

- A code is six random digits (``secrets``), stored as an HMAC bound to the phone reference, valid
  for ``settings.otp_seconds``, single use, dead after ``settings.otp_max_attempts`` wrong tries.
- One pending code per phone; a new one can be asked for after :data:`RESEND_SECONDS`.
- Rate limits live in the database (``common.ratelimit``) so they hold across replicas: codes per
  phone per hour, codes per peer per hour, logins per peer per minute. Keys are HMACs.

The functions *return* client errors instead of raising them, so the caller's transaction commits
the counters (a failed attempt must count even though the call fails).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import secrets
from dataclasses import dataclass

from sqlalchemy import delete
from sqlalchemy.orm import Session

from healthcode.common.errors import ResourceExhausted, ServiceError, Unauthenticated
from healthcode.server.auth.models import LoginCode
from healthcode.server.auth.tokens import peer_ref, phone_ref
from healthcode.server.common import ratelimit
from healthcode.server.settings import ServerSettings

#: Minimum seconds between two codes for the same phone.
RESEND_SECONDS = 60
CODE_DIGITS = 6


def login_code_invalid() -> Unauthenticated:
    """The one answer for a wrong, expired, used or unknown code (no account enumeration)."""
    return Unauthenticated("LOGIN_CODE_INVALID", "the login code is wrong or has expired")


def new_code() -> str:
    """Six random digits."""
    return f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"


def code_hash(secret: bytes, ref: str, code: str) -> bytes:
    """HMAC of a code bound to its phone reference."""
    return hmac.new(secret, f"otp:{ref}:{code}".encode(), hashlib.sha256).digest()


@dataclass(frozen=True)
class IssuedCode:
    """A code to send, with the timings reported to the client."""

    code: str
    expires_in_seconds: int
    resend_after_seconds: int


def issue_code(
    session: Session,
    *,
    secret: bytes,
    settings: ServerSettings,
    phone: str,
    peer: str,
    now: dt.datetime,
) -> IssuedCode | ServiceError:
    """Create (or replace) the pending code of ``phone``; an error when throttled or limited."""
    try:
        ratelimit.hit(
            session,
            f"otp-peer:{peer_ref(secret, peer)}",
            limit=settings.otp_per_peer_per_hour,
            window_seconds=3600,
            now=now,
            reason="LOGIN_CODE_RATE_LIMITED",
        )
    except ResourceExhausted as err:
        return err
    ref = phone_ref(secret, phone)
    row = session.get(LoginCode, ref, with_for_update=True)
    if row is not None:
        wait = RESEND_SECONDS - int((now - row.sent_at).total_seconds())
        if wait > 0:
            return ResourceExhausted(
                "LOGIN_CODE_RESEND_TOO_SOON",
                f"a code was sent recently; retry in {wait} s",
                metadata={"retry_after_s": str(wait)},
            )
    try:
        ratelimit.hit(
            session,
            f"otp-phone:{ref}",
            limit=settings.otp_per_phone_per_hour,
            window_seconds=3600,
            now=now,
            reason="LOGIN_CODE_RATE_LIMITED",
        )
    except ResourceExhausted as err:
        return err
    code = new_code()
    expires = now + dt.timedelta(seconds=settings.otp_seconds)
    if row is None:
        session.add(
            LoginCode(
                phone_ref=ref,
                code_hash=code_hash(secret, ref, code),
                sent_at=now,
                expires_at=expires,
                attempts=0,
                used_at=None,
            )
        )
    else:
        row.code_hash = code_hash(secret, ref, code)
        row.sent_at = now
        row.expires_at = expires
        row.attempts = 0
        row.used_at = None
    return IssuedCode(code, settings.otp_seconds, RESEND_SECONDS)


def verify_code(
    session: Session,
    *,
    secret: bytes,
    settings: ServerSettings,
    phone: str,
    code: str,
    peer: str,
    now: dt.datetime,
) -> ServiceError | None:
    """Consume the code of ``phone`` if ``code`` matches; otherwise count the attempt.

    Returns None on success, or the error to raise after the transaction commits.
    """
    try:
        ratelimit.hit(
            session,
            f"login-peer:{peer_ref(secret, peer)}",
            limit=settings.login_per_peer_per_minute,
            window_seconds=60,
            now=now,
            reason="LOGIN_RATE_LIMITED",
        )
    except ResourceExhausted as err:
        return err
    ref = phone_ref(secret, phone)
    row = session.get(LoginCode, ref, with_for_update=True)
    if (
        row is None
        or row.used_at is not None
        or row.expires_at <= now
        or row.attempts >= settings.otp_max_attempts
    ):
        return login_code_invalid()
    if not hmac.compare_digest(row.code_hash, code_hash(secret, ref, code)):
        row.attempts += 1
        return login_code_invalid()
    row.used_at = now
    return None


def purge_expired(session: Session, *, now: dt.datetime) -> int:
    """Delete codes that can no longer be used nor throttle a resend (housekeeping)."""
    cutoff = now - dt.timedelta(seconds=RESEND_SECONDS)
    result = session.execute(
        delete(LoginCode).where(LoginCode.expires_at < now, LoginCode.sent_at < cutoff)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
