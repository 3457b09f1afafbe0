"""Core tables shared by every domain: people, accounts, sessions, checkpoints, devices, passages,
idempotency records, the server-side audit trail and rate-limit counters.

No column holds a plaintext ID number, phone or name: ``*_token`` columns hold privacy-vault tokens
(the vault deduplicates by blind index, so one value always maps to one token and the token column
works as the lookup reference), ``masked_*`` columns hold de-identified display forms.
Domain-specific tables live in their domain packages (``healthcode.server.<domain>.models``) on the
same :class:`~healthcode.server.db.base.Base`.
"""

from __future__ import annotations

import datetime as dt

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from healthcode.server.db.base import Base, new_id, utcnow


class Person(Base):
    """A person known to the platform: a resident, a dependent or a person registered at a gate."""

    __tablename__ = "persons"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: Vault token of the ID number; unique because the vault deduplicates by blind index.
    id_token: Mapped[str] = mapped_column(String(128), unique=True)
    name_token: Mapped[str] = mapped_column(String(128))
    phone_token: Mapped[str | None] = mapped_column(String(128), index=True)
    address_token: Mapped[str | None] = mapped_column(String(128))
    id_type: Mapped[str] = mapped_column(String(24))
    masked_name: Mapped[str] = mapped_column(String(80))
    masked_id_number: Mapped[str] = mapped_column(String(24))
    masked_phone: Mapped[str] = mapped_column(String(16), default="")
    masked_address: Mapped[str] = mapped_column(String(32), default="")
    division_code: Mapped[str] = mapped_column(String(6), index=True)
    #: The resident account acting for this person (self or guardian of a dependent).
    guardian_account_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("accounts.id"), index=True
    )
    relationship: Mapped[str] = mapped_column(String(16), default="")
    #: True for people without their own app account (dependents, gate registrations).
    managed: Mapped[bool] = mapped_column(Boolean, default=False)
    #: Current colour (1 green, 2 yellow, 3 red), recomputed by the status rules on every change.
    color: Mapped[int] = mapped_column(Integer, default=1)
    rules_version: Mapped[str] = mapped_column(String(16), default="")
    status_updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    #: When the cached colour must be recomputed (a rule runs out); None = only on change.
    status_valid_until: Mapped[dt.datetime | None] = mapped_column()
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Account(Base):
    """A login: resident, staff, official, or a service account (partner, provincial)."""

    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: Role name, lower case (``resident``, ``staff``, ``district_admin`` ...).
    role: Mapped[str] = mapped_column(String(24), index=True)
    #: Vault token of the login phone; empty for service accounts.
    phone_token: Mapped[str | None] = mapped_column(String(128), unique=True)
    masked_phone: Mapped[str] = mapped_column(String(16), default="")
    display_name: Mapped[str] = mapped_column(String(64), default="")
    checkpoint_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("checkpoints.id"))
    division_code: Mapped[str | None] = mapped_column(String(6))
    #: The resident's own person record once the profile is registered.
    person_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("persons.id", use_alter=True)
    )
    disabled: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuthSession(Base):
    """A bearer credential: login session, device token or service credential (hashes only)."""

    __tablename__ = "auth_sessions"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    #: SHA-256 of the access token.
    access_hash: Mapped[bytes] = mapped_column(LargeBinary(32), unique=True)
    refresh_hash: Mapped[bytes | None] = mapped_column(LargeBinary(32), unique=True)
    account_id: Mapped[str | None] = mapped_column(
        String(32), ForeignKey("accounts.id"), index=True
    )
    device_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("devices.id"), index=True)
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    refresh_expires_at: Mapped[dt.datetime | None] = mapped_column()
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Checkpoint(Base):
    """A checkpoint (卡口)."""

    __tablename__ = "checkpoints"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    name: Mapped[str] = mapped_column(String(64))
    division_code: Mapped[str] = mapped_column(String(6), index=True)
    location: Mapped[str] = mapped_column(String(200), default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Device(Base):
    """An enrolled checkpoint edge device."""

    __tablename__ = "devices"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    checkpoint_id: Mapped[str] = mapped_column(String(32), ForeignKey("checkpoints.id"), index=True)
    name: Mapped[str] = mapped_column(String(64), default="")
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class DeviceEnrollment(Base):
    """A one-time device enrolment code (stored hashed)."""

    __tablename__ = "device_enrollments"

    code_hash: Mapped[bytes] = mapped_column(LargeBinary(32), primary_key=True)
    checkpoint_id: Mapped[str] = mapped_column(String(32), ForeignKey("checkpoints.id"))
    created_by: Mapped[str] = mapped_column(String(32))
    expires_at: Mapped[dt.datetime] = mapped_column()
    used_at: Mapped[dt.datetime | None] = mapped_column()


class Passage(Base):
    """One passage through a checkpoint. Deleted after the retention period."""

    __tablename__ = "passages"
    __table_args__ = (
        Index("ix_passages_checkpoint_time", "checkpoint_id", "occurred_at"),
        Index("ix_passages_person_time", "person_id", "occurred_at"),
        Index("ix_passages_occurred_at", "occurred_at"),
        UniqueConstraint("source_id", "scan_id", name="uq_passages_source_scan"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    checkpoint_id: Mapped[str] = mapped_column(String(32), ForeignKey("checkpoints.id"))
    person_id: Mapped[str] = mapped_column(String(32), ForeignKey("persons.id"))
    division_code: Mapped[str] = mapped_column(String(6))
    color: Mapped[int] = mapped_column(Integer)
    direction: Mapped[int] = mapped_column(Integer)
    method: Mapped[int] = mapped_column(Integer)
    decision: Mapped[int] = mapped_column(Integer)
    temperature: Mapped[float] = mapped_column(Float, default=0.0)
    offline: Mapped[bool] = mapped_column(Boolean, default=False)
    occurred_at: Mapped[dt.datetime] = mapped_column()
    #: Account or device that recorded it, and its scan/request id: together unique (dedup).
    source_id: Mapped[str] = mapped_column(String(32))
    scan_id: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class IdempotencyRecord(Base):
    """The stored response of a retry-safe write, keyed by caller, method and request id."""

    __tablename__ = "idempotency_records"

    caller_id: Mapped[str] = mapped_column(String(32), primary_key=True)
    method: Mapped[str] = mapped_column(String(96), primary_key=True)
    request_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    #: SHA-256 of the serialised request: the same id with a different request is refused.
    request_hash: Mapped[bytes] = mapped_column(LargeBinary(32))
    response: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)


class AuditEvent(Base):
    """Server-side audit trail of officials' actions and identity queries (no PII: ids only)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_time", "occurred_at"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    actor_id: Mapped[str] = mapped_column(String(32))
    actor_role: Mapped[str] = mapped_column(String(24))
    action: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64), default="")
    purpose: Mapped[str] = mapped_column(Text, default="")
    outcome: Mapped[str] = mapped_column(String(24), default="OK")
    occurred_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class RateLimitCounter(Base):
    """Fixed-window counters shared by all replicas (key is a hash, never a phone)."""

    __tablename__ = "rate_limit_counters"

    key: Mapped[str] = mapped_column(String(96), primary_key=True)
    window_start: Mapped[int] = mapped_column(Integer, primary_key=True)
    count: Mapped[int] = mapped_column(Integer, default=0)


class Setting(Base):
    """Key-value settings changed at run time (retention)."""

    __tablename__ = "settings"

    key: Mapped[str] = mapped_column(String(64), primary_key=True)
    value: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
