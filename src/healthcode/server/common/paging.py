"""Page sizes and opaque page tokens (AIP-158).

Tokens are URL-safe base64 of a small JSON object, authenticated with an HMAC so clients cannot
forge cursors into other people's data; a bad token is INVALID_ARGUMENT on ``page_token``.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
from typing import Any

from healthcode.common.errors import invalid

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 500
_KEY = os.urandom(32)


def set_token_key(key: bytes) -> None:
    """Use a shared key so tokens work across replicas (the server sets it from its secret)."""
    global _KEY  # noqa: PLW0603 - process-wide configuration set once at start
    _KEY = key


def page_size(value: int, field: str = "page_size") -> int:
    """0 -> default; negative -> INVALID_ARGUMENT; capped at the maximum."""
    if value < 0:
        raise invalid(field, "must not be negative")
    return DEFAULT_PAGE_SIZE if value == 0 else min(value, MAX_PAGE_SIZE)


def encode_token(cursor: dict[str, Any]) -> str:
    """Make an opaque token for ``cursor``."""
    body = json.dumps(cursor, separators=(",", ":"), sort_keys=True).encode()
    mac = hmac.new(_KEY, body, hashlib.sha256).digest()[:12]
    return base64.urlsafe_b64encode(mac + body).decode().rstrip("=")


def decode_token(token: str, field: str = "page_token") -> dict[str, Any] | None:
    """The cursor of a token; None for an empty token; INVALID_ARGUMENT for a bad one."""
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        mac, body = raw[:12], raw[12:]
        if not hmac.compare_digest(mac, hmac.new(_KEY, body, hashlib.sha256).digest()[:12]):
            raise ValueError("mac")
        cursor = json.loads(body)
        if not isinstance(cursor, dict):
            raise ValueError("shape")
    except (ValueError, UnicodeDecodeError) as exc:
        raise invalid(field, "is not a token returned by this server") from exc
    return cursor
