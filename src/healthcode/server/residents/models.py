"""Tables of the residents domain: health and travel declarations, corrections (纠错)."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import JSON, Float, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from healthcode.server.db.base import Base, new_id, utcnow


class HealthDeclaration(Base):
    """Temperature and symptoms declared for a person. Deleted after the retention period."""

    __tablename__ = "health_declarations"
    __table_args__ = (Index("ix_health_declarations_person_time", "person_id", "declared_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    person_id: Mapped[str] = mapped_column(String(32), ForeignKey("persons.id"))
    declared_by: Mapped[str] = mapped_column(String(32))
    temperature: Mapped[float] = mapped_column(Float)
    #: Symptom enum names, e.g. ["SYMPTOM_COUGH"].
    symptoms: Mapped[list[str]] = mapped_column(JSON, default=list)
    declared_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class TravelDeclaration(Base):
    """Divisions visited in the last 14 days. Deleted after the retention period."""

    __tablename__ = "travel_declarations"
    __table_args__ = (Index("ix_travel_declarations_person_time", "person_id", "declared_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    person_id: Mapped[str] = mapped_column(String(32), ForeignKey("persons.id"))
    declared_by: Mapped[str] = mapped_column(String(32))
    visited_division_codes: Mapped[list[str]] = mapped_column(JSON, default=list)
    arrived_at: Mapped[dt.datetime] = mapped_column()
    declared_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Correction(Base):
    """A correction request or appeal against an official decision."""

    __tablename__ = "corrections"
    __table_args__ = (Index("ix_corrections_state_time", "state", "created_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    person_id: Mapped[str] = mapped_column(String(32), ForeignKey("persons.id"), index=True)
    filed_by: Mapped[str] = mapped_column(String(32), ForeignKey("accounts.id"))
    #: The appealed status change, if any.
    change_id: Mapped[str | None] = mapped_column(String(32), ForeignKey("status_changes.id"))
    reason: Mapped[str] = mapped_column(Text)
    #: PENDING, ACCEPTED or REJECTED.
    state: Mapped[str] = mapped_column(String(16), default="PENDING")
    reviewed_by: Mapped[str | None] = mapped_column(String(32), ForeignKey("accounts.id"))
    review_comment: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    reviewed_at: Mapped[dt.datetime | None] = mapped_column()
