"""Tables behind official status: two-person status changes, risk lists, risk areas."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import ForeignKey, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from healthcode.server.db.base import Base, new_id, utcnow


class StatusChange(Base):
    """An official status decision: proposed by one official, approved by another."""

    __tablename__ = "status_changes"
    __table_args__ = (
        Index("ix_status_changes_state_time", "state", "created_at"),
        Index("ix_status_changes_person", "person_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    person_id: Mapped[str] = mapped_column(String(32), ForeignKey("persons.id"))
    #: 1 green, 2 yellow, 3 red.
    color: Mapped[int] = mapped_column(Integer)
    legal_basis: Mapped[str] = mapped_column(Text)
    #: PENDING, APPROVED, REJECTED or LIFTED.
    state: Mapped[str] = mapped_column(String(16), default="PENDING")
    proposed_by: Mapped[str] = mapped_column(String(32), ForeignKey("accounts.id"))
    proposed_by_label: Mapped[str] = mapped_column(String(96))
    reviewed_by: Mapped[str | None] = mapped_column(String(32), ForeignKey("accounts.id"))
    reviewed_by_label: Mapped[str] = mapped_column(String(96), default="")
    review_comment: Mapped[str] = mapped_column(Text, default="")
    duration_days: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column()
    #: Set on approval when duration_days > 0.
    expires_at: Mapped[dt.datetime | None] = mapped_column()
    lifted_at: Mapped[dt.datetime | None] = mapped_column()


class RiskListEntry(Base):
    """A person on an imported close-contact / confirmed list, by ID-number vault token."""

    __tablename__ = "risk_list_entries"
    __table_args__ = (Index("ix_risk_list_entries_token", "id_token", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    import_id: Mapped[str] = mapped_column(String(32), index=True)
    #: CLOSE_CONTACT, CONFIRMED or SECONDARY_CONTACT.
    kind: Mapped[str] = mapped_column(String(24))
    id_token: Mapped[str] = mapped_column(String(128))
    legal_basis: Mapped[str] = mapped_column(Text)
    imported_by: Mapped[str] = mapped_column(String(32))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[dt.datetime] = mapped_column()
    #: The vault subject reserved for a listed person the platform did not know at import (their
    #: future ``Person.id``, which holds the ID number in the vault); None when the ID number was
    #: held by a person already. See ADR 0003 "Reserved subjects".
    subject_id: Mapped[str | None] = mapped_column(String(32), index=True)
    #: Set when retention started erasing the reserved subject (no person may take it any more).
    released_at: Mapped[dt.datetime | None] = mapped_column()


class RiskArea(Base):
    """A division declared a risk area; travellers from it turn yellow."""

    __tablename__ = "risk_areas"

    division_code: Mapped[str] = mapped_column(String(6), primary_key=True)
    legal_basis: Mapped[str] = mapped_column(Text)
    added_by: Mapped[str] = mapped_column(String(32))
    added_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
