"""Shared builders for status and admin tests: a migrated database and synthetic rows.

No real personal data: tokens are random, masked forms are fixed placeholders.
"""

from __future__ import annotations

import datetime as dt
import secrets

from sqlalchemy.orm import Session

from healthcode.server.common.principal import Principal, Role
from healthcode.server.db.base import new_id
from healthcode.server.db.engine import Database
from healthcode.server.db.migrate import upgrade
from healthcode.server.db.models import Account, Checkpoint, Passage, Person
from healthcode.server.residents.models import Correction, HealthDeclaration, TravelDeclaration

T0 = dt.datetime(2022, 5, 1, 8, 0, tzinfo=dt.UTC)


def open_db(url: str) -> Database:
    """A migrated database for ``url``."""
    upgrade(url)
    return Database.from_url(url, threads=2)


def token(prefix: str = "idn") -> str:
    """A random vault-shaped token."""
    alphabet = "abcdefghijklmnopqrstuvwxyz234567"
    return prefix + "_" + "".join(secrets.choice(alphabet) for _ in range(26))


def person(session: Session, division: str = "510402", id_token: str | None = None) -> Person:
    """A person with random tokens."""
    row = Person(
        id=new_id(),
        id_token=id_token or token(),
        name_token=token("nam"),
        id_type="RESIDENT",
        masked_name="测*",
        masked_id_number="5***************12",
        division_code=division,
        created_at=T0 - dt.timedelta(days=30),
    )
    session.add(row)
    session.flush()
    return row


def official(
    session: Session,
    role: Role = Role.HEALTH_AUTHORITY,
    division: str | None = None,
    name: str = "卫健局 王科长",
) -> Principal:
    """An official account and its principal."""
    account = Account(id=new_id(), role=role.value, display_name=name, division_code=division)
    session.add(account)
    session.flush()
    return Principal(
        id=account.id, role=role, session_id=new_id(), division_code=division, display_name=name
    )


def health(
    session: Session,
    who: Person,
    at: dt.datetime,
    temp: float = 36.5,
    symptoms: list[str] | None = None,
) -> HealthDeclaration:
    """A health declaration."""
    row = HealthDeclaration(
        person_id=who.id,
        declared_by="test",
        temperature=temp,
        symptoms=symptoms or [],
        declared_at=at,
    )
    session.add(row)
    session.flush()
    return row


def travel(
    session: Session,
    who: Person,
    codes: list[str],
    arrived: dt.datetime,
    declared: dt.datetime | None = None,
) -> TravelDeclaration:
    """A travel declaration."""
    row = TravelDeclaration(
        person_id=who.id,
        declared_by="test",
        visited_division_codes=codes,
        arrived_at=arrived,
        declared_at=declared or arrived,
    )
    session.add(row)
    session.flush()
    return row


def checkpoint(session: Session, division: str = "510402") -> Checkpoint:
    """A checkpoint."""
    row = Checkpoint(id=new_id(), name="测试卡口", division_code=division, created_at=T0)
    session.add(row)
    session.flush()
    return row


def passage(session: Session, who: Person, cp: Checkpoint, at: dt.datetime) -> Passage:
    """A passage."""
    row = Passage(
        id=new_id(),
        checkpoint_id=cp.id,
        person_id=who.id,
        division_code=cp.division_code,
        color=1,
        direction=1,
        method=1,
        decision=1,
        occurred_at=at,
        source_id="test",
        scan_id=new_id(),
    )
    session.add(row)
    session.flush()
    return row


def correction(
    session: Session, who: Person, change_id: str | None, at: dt.datetime = T0
) -> Correction:
    """A pending correction filed by a resident account."""
    account = Account(id=new_id(), role="resident")
    session.add(account)
    session.flush()
    row = Correction(
        person_id=who.id, filed_by=account.id, change_id=change_id, reason="并非密接", created_at=at
    )
    session.add(row)
    session.flush()
    return row
