"""A real stack for the codes, verification and checkpoint tests: a real vault (port 0, SQLite,
local keys) and the platform server with CodeService, VerificationService and CheckpointService on
port 0 over the ``database_url`` database (SQLite and PostgreSQL), plus seeding helpers that
create checkpoints, accounts, devices and persons (tokenized through the real vault).

Used until the lead's ``tests/fixtures/platform.py`` (``platform_stack``) exists.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from healthcode_sdk._gen.healthcode.v1 import checkpoint_service_pb2_grpc as cp_grpc
from healthcode_sdk._gen.healthcode.v1 import code_service_pb2_grpc as code_grpc
from healthcode_sdk._gen.healthcode.v1 import verification_service_pb2_grpc as ver_grpc
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from healthcode.common.identity import classify_id_number
from healthcode.server.app import SERVICES, build_platform, build_server
from healthcode.server.auth.sessions import create_login_session
from healthcode.server.auth.tokens import new_token, token_hash
from healthcode.server.db.base import new_id, utcnow
from healthcode.server.db.engine import Database
from healthcode.server.db.models import Account, AuthSession, Checkpoint, Device, Person
from healthcode.server.platform import Platform
from healthcode.server.settings import ServerSettings
from healthcode.server.status.models import StatusChange
from healthcode.server.status.rules import recompute
from healthcode.vault.auth import read_credential_file
from healthcode.vault.client import TokenizeItem
from healthcode.vault.fields import FieldType
from healthcode.vault.server import VaultServer
from healthcode.vault.settings import VaultSettings
from tests.fixtures import people

MY_SERVICES = tuple(
    s
    for s in SERVICES
    if s[2]
    in (
        "healthcode.v1.CodeService",
        "healthcode.v1.VerificationService",
        "healthcode.v1.CheckpointService",
    )
)

Metadata = tuple[tuple[str, str], ...]


def bearer(token: str) -> Metadata:
    """Call metadata carrying an access token."""
    return (("authorization", f"Bearer {token}"),)


@dataclass
class Caller:
    """A seeded caller: its id, token metadata and (for staff/devices) checkpoint."""

    id: str
    md: Metadata
    checkpoint_id: str | None = None
    person_id: str | None = None


@dataclass
class GateStack:
    """The running stack and helpers to seed and inspect it."""

    platform: Platform
    settings: ServerSettings
    channel: grpc.aio.Channel
    codes: code_grpc.CodeServiceStub
    verification: ver_grpc.VerificationServiceStub
    checkpoints: cp_grpc.CheckpointServiceStub
    servers: list[Any] = field(default_factory=list)

    @property
    def db(self) -> Database:
        return self.platform.db

    async def count(self, model: Any, *where: Any) -> int:
        def run(session: Session) -> int:
            return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

        return await self.db.run(run)

    async def checkpoint(self, division: str = "510402", name: str = "测试卡口") -> str:
        def run(session: Session) -> str:
            row = Checkpoint(id=new_id(), name=name, division_code=division)
            session.add(row)
            return row.id

        return await self.db.run(run)

    async def account(
        self,
        role: str,
        *,
        checkpoint_id: str | None = None,
        division: str | None = None,
        person_id: str | None = None,
    ) -> Caller:
        settings = self.settings

        def run(session: Session) -> Caller:
            account = Account(
                id=new_id(),
                role=role,
                phone_token=None,
                checkpoint_id=checkpoint_id,
                division_code=division,
                display_name=f"test {role}",
            )
            session.add(account)
            session.flush()
            if person_id is not None:
                account.person_id = person_id
                person = session.get(Person, person_id)
                assert person is not None
                person.guardian_account_id = account.id
            issued = create_login_session(session, account.id, settings=settings, now=utcnow())
            return Caller(account.id, bearer(issued.access_token), checkpoint_id, person_id)

        return await self.db.run(run)

    async def staff(self, checkpoint_id: str, division: str = "510402") -> Caller:
        return await self.account("staff", checkpoint_id=checkpoint_id, division=division)

    async def device(self, checkpoint_id: str) -> Caller:
        token = new_token()

        def run(session: Session) -> str:
            device = Device(id=new_id(), checkpoint_id=checkpoint_id, name="edge")
            session.add(device)
            session.flush()
            session.add(
                AuthSession(id=new_id(), access_hash=token_hash(token), device_id=device.id)
            )
            return device.id

        device_id = await self.db.run(run)
        return Caller(device_id, bearer(token), checkpoint_id)

    async def person(
        self, division: str = "510402", *, guardian: str | None = None, managed: bool = False
    ) -> tuple[str, people.Person]:
        """A person tokenized through the real vault; returns (person_id, plaintext record)."""
        record = people.person(division)
        person_id = new_id()
        results = await self.platform.vault.tokenize(
            [
                TokenizeItem(FieldType.ID_NUMBER, record.id_number, person_id),
                TokenizeItem(FieldType.NAME, record.name, person_id),
                TokenizeItem(FieldType.PHONE, record.phone, person_id),
            ]
        )
        kind = classify_id_number(record.id_number)
        assert kind is not None

        def run(session: Session) -> None:
            session.add(
                Person(
                    id=person_id,
                    id_token=results[0].token,
                    name_token=results[1].token,
                    phone_token=results[2].token,
                    id_type=kind.value,
                    masked_name=results[1].masked,
                    masked_id_number=results[0].masked,
                    masked_phone=results[2].masked,
                    division_code=division,
                    guardian_account_id=guardian,
                    managed=managed,
                    color=1,
                    rules_version="",
                )
            )

        await self.db.run(run)
        return person_id, record

    async def resident(self, division: str = "510402") -> Caller:
        """A resident account with its own person."""
        person_id, _ = await self.person(division)
        return await self.account("resident", division=division, person_id=person_id)

    async def set_color(self, person_id: str, color: int) -> None:
        """An approved official decision (two officials) and a recompute: the rules API."""
        proposer = await self.account("district_admin", division="510402")
        approver = await self.account("health_authority")

        def run(session: Session) -> None:
            now = utcnow()
            session.add(
                StatusChange(
                    id=new_id(),
                    person_id=person_id,
                    color=color,
                    legal_basis="测试依据",
                    state="APPROVED",
                    proposed_by=proposer.id,
                    proposed_by_label="p",
                    reviewed_by=approver.id,
                    reviewed_by_label="a",
                    created_at=now - dt.timedelta(seconds=2),
                    reviewed_at=now - dt.timedelta(seconds=1),
                )
            )
            session.flush()
            person = session.get(Person, person_id)
            assert person is not None
            recompute(session, person, now)

        await self.db.run(run)


async def start_gate_stack(
    database_url: str, home: Path, **overrides: Any
) -> AsyncIterator[GateStack]:
    """Start vault + server; yields the stack and stops everything afterwards."""
    vault_settings = VaultSettings(home=home / "vaulthome", listen="127.0.0.1:0")
    vault = VaultServer(vault_settings)
    vault_port = await vault.start()
    credential = read_credential_file(vault_settings.platform_credential_file)
    settings = ServerSettings(
        home=home,
        database_url=database_url,
        privacy_vault_address=f"127.0.0.1:{vault_port}",
        privacy_vault_credential=SecretStr(credential),
        **{"db_threads": 4, **overrides},
    )
    platform = await build_platform(settings)
    vault_client = platform.vault
    server, _health = build_server(platform, services=MY_SERVICES)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stack = GateStack(
        platform=platform,
        settings=settings,
        channel=channel,
        codes=code_grpc.CodeServiceStub(channel),
        verification=ver_grpc.VerificationServiceStub(channel),
        checkpoints=cp_grpc.CheckpointServiceStub(channel),
        servers=[server, vault],
    )
    try:
        yield stack
    finally:
        await channel.close()
        await server.stop(None)
        await vault_client.close()
        platform.db.close()
        await vault.stop()
