"""Bearer tokens, their stored hashes and keyed references (HMAC with the server secret).

Only hashes ever reach the database: SHA-256 of bearer tokens (access, refresh, device, enrolment
codes) and HMAC-SHA-256 of phone numbers and peer addresses (rate-limit and OTP keys).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets


def new_token() -> str:
    """A fresh bearer token (256 random bits, URL-safe)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> bytes:
    """The SHA-256 digest stored for a bearer token or a one-time enrolment code."""
    return hashlib.sha256(token.encode("utf-8")).digest()


def hash_enrollment_code(code: str) -> bytes:
    """How ``DeviceEnrollment.code_hash`` is computed (AdminService.CreateDeviceEnrollment
    must use it too)."""
    return token_hash(code.strip())


def keyed_ref(secret: bytes, kind: str, value: str) -> str:
    """A hex HMAC reference of ``value`` (a phone, a peer address) that reveals nothing about it."""
    return hmac.new(secret, f"{kind}:{value}".encode(), hashlib.sha256).hexdigest()


def phone_ref(secret: bytes, phone: str) -> str:
    """The reference of a normalised phone: OTP key, rate-limit key and SMS outbox reference."""
    return keyed_ref(secret, "phone", phone)


def peer_ref(secret: bytes, peer: str) -> str:
    """The reference of a peer address (``ipv4:1.2.3.4:5678`` -> host part only)."""
    return keyed_ref(secret, "peer", peer_host(peer))


def peer_host(peer: str) -> str:
    """The host part of a gRPC peer string (ports change per connection; hosts do not)."""
    kind, _, rest = peer.partition(":")
    if kind in ("ipv4", "ipv6"):
        host, _, _port = rest.rpartition(":")
        return f"{kind}:{host or rest}"
    return peer
