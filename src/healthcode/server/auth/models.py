"""Tables of the auth domain: pending SMS login codes.

Keyed by an HMAC of the normalised phone with the server secret, never the phone itself; the code
is stored as an HMAC too. One pending code per phone: a resend replaces it.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, mapped_column

from healthcode.server.db.base import Base, utcnow


class LoginCode(Base):
    """The pending SMS login code of one phone (hashed), with its attempt counter."""

    __tablename__ = "login_codes"

    #: HMAC-SHA-256 (hex) of the normalised phone with the server secret.
    phone_ref: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: HMAC-SHA-256 of the code, bound to the phone reference.
    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    sent_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column(index=True)
    #: Failed attempts so far; the code is dead once it reaches the configured maximum.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    #: Set when the code was used (single use); the row stays for the resend throttle.
    used_at: Mapped[dt.datetime | None] = mapped_column()
