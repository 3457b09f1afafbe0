"""A minimal real stack for the auth and residents tests: a real vault (VaultServer on port 0,
SQLite, local keys) and the platform server with AuthService + ResidentService on port 0 over the
``database_url`` database (SQLite and PostgreSQL).

Used until the lead's ``tests/fixtures/platform.py`` (``platform_stack``) exists.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from pydantic import SecretStr
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from healthcode.server.app import SERVICES, build_server
from healthcode.server.auth.sms import OutboxSmsSender
from healthcode.server.auth.tokens import phone_ref
from healthcode.server.common import paging
from healthcode.server.db.engine import Database
from healthcode.server.db.migrate import upgrade
from healthcode.server.platform import Platform, load_or_create_secret
from healthcode.server.settings import ServerSettings
from healthcode.vault.auth import read_credential_file
from healthcode.vault.client import VaultClient
from healthcode.vault.server import VaultServer
from healthcode.vault.settings import VaultSettings
from healthcode_sdk._gen.healthcode.v1 import (
    auth_service_pb2 as auth_pb,
)
from healthcode_sdk._gen.healthcode.v1 import (
    auth_service_pb2_grpc as auth_grpc,
)
from healthcode_sdk._gen.healthcode.v1 import (
    resident_service_pb2_grpc as res_grpc,
)

OWN_SERVICES = tuple(
    s for s in SERVICES if s[2] in ("healthcode.v1.AuthService", "healthcode.v1.ResidentService")
)


@dataclass
class Stack:
    """The running stack and helpers to drive it."""

    platform: Platform
    settings: ServerSettings
    channel: grpc.aio.Channel
    auth: auth_grpc.AuthServiceStub
    residents: res_grpc.ResidentServiceStub
    servers: list[Any] = field(default_factory=list)

    @property
    def db(self) -> Database:
        return self.platform.db

    def outbox_code(self, phone: str) -> str | None:
        """The newest code the outbox holds for ``phone`` (found by reference, not by phone)."""
        path: Path = self.settings.sms_outbox
        if not path.exists():
            return None
        ref = phone_ref(self.platform.secret, phone)
        code = None
        for line in path.read_text(encoding="utf-8").splitlines():
            record = json.loads(line)
            assert phone not in line  # the plaintext phone is never written
            if record["ref"] == ref:
                code = record["code"]
        return code

    async def login(self, phone: str) -> auth_pb.LoginResponse:
        """SendLoginCode + Login through the outbox."""
        await self.auth.SendLoginCode(auth_pb.SendLoginCodeRequest(phone=phone))
        code = self.outbox_code(phone)
        assert code is not None
        return await self.auth.Login(auth_pb.LoginRequest(phone=phone, code=code))

    async def count(self, model: Any, *where: Any) -> int:
        def run(session: Session) -> int:
            return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)

        return await self.db.run(run)


def bearer(token: str) -> tuple[tuple[str, str], ...]:
    """Call metadata carrying an access token."""
    return (("authorization", f"Bearer {token}"),)


def utc(**delta: float) -> dt.datetime:
    """Now plus a delta."""
    return dt.datetime.now(dt.UTC) + dt.timedelta(**delta)


async def start_stack(database_url: str, home: Path, **overrides: Any) -> AsyncIterator[Stack]:
    """Start vault + server; yields the stack and stops everything afterwards."""
    vault_settings = VaultSettings(home=home / "vaulthome", listen="127.0.0.1:0")
    vault = VaultServer(vault_settings)
    vault_port = await vault.start()
    credential = read_credential_file(vault_settings.platform_credential_file)
    settings = ServerSettings(
        home=home,
        database_url=database_url,
        vault_address=f"127.0.0.1:{vault_port}",
        vault_credential=SecretStr(credential),
        **overrides,
    )
    settings.server_dir.mkdir(parents=True, exist_ok=True)
    upgrade(database_url)
    secret = load_or_create_secret(settings.server_dir / "secret.key")
    paging.set_token_key(secret)
    db = Database.from_url(database_url, threads=4)
    vault_client = VaultClient.connect(settings.vault_address, credential)
    platform = Platform(
        settings=settings,
        db=db,
        vault=vault_client,
        secret=secret,
        keys=None,  # type: ignore[arg-type]  # no CodeService in these tests
        sms=OutboxSmsSender(settings.sms_outbox, secret),
    )
    server, _health = build_server(platform, services=OWN_SERVICES)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stack = Stack(
        platform=platform,
        settings=settings,
        channel=channel,
        auth=auth_grpc.AuthServiceStub(channel),
        residents=res_grpc.ResidentServiceStub(channel),
        servers=[server, vault],
    )
    try:
        yield stack
    finally:
        await channel.close()
        await server.stop(None)
        await vault_client.close()
        db.close()
        await vault.stop()
