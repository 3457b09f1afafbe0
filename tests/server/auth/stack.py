"""A per-test real stack for the auth and residents tests: a real vault (VaultServer on port 0,
local keys) and the real platform server (PlatformServer on port 0) over the ``database_url``
database (SQLite and PostgreSQL), driven with async stubs.

Per test rather than the module-scoped ``platform_stack``: these tests move the clock and exhaust
rate limits (all calls come from 127.0.0.1), which must not leak into other tests.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from healthcode_sdk._gen.healthcode.v1 import (
    auth_service_pb2 as auth_pb,
)
from healthcode_sdk._gen.healthcode.v1 import (
    auth_service_pb2_grpc as auth_grpc,
)
from healthcode_sdk._gen.healthcode.v1 import (
    resident_service_pb2_grpc as res_grpc,
)
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from healthcode.server.app import PlatformServer
from healthcode.server.auth.tokens import phone_ref
from healthcode.server.db.engine import Database
from healthcode.server.platform import Platform
from healthcode.server.settings import ServerSettings
from healthcode.vault.server import VaultServer
from healthcode.vault.settings import VaultSettings
from tests.fixtures import people
from tests.fixtures.platform import collect_blobs, find_pii


@dataclass
class Stack:
    """The running stack and helpers to drive it."""

    platform: Platform
    settings: ServerSettings
    channel: grpc.aio.Channel
    auth: auth_grpc.AuthServiceStub
    residents: res_grpc.ResidentServiceStub

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
    """Start a real vault and the real platform server (``PlatformServer``) on port 0.

    Function-scoped on purpose: rate limits and clocks are per test. On teardown the data
    directory and the server database are searched for every synthetic personal value.
    """
    vault = VaultServer(VaultSettings(home=home, listen="127.0.0.1:0", backend="local"))
    vault_port = await vault.start()
    server: PlatformServer | None = None
    channel: grpc.aio.Channel | None = None
    try:
        settings = ServerSettings(
            home=home,
            listen="127.0.0.1:0",
            database_url=database_url,
            privacy_vault_address=f"127.0.0.1:{vault_port}",
            **overrides,
        )
        server = PlatformServer(settings)
        port = await server.start()
        assert server.platform is not None
        channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        yield Stack(
            platform=server.platform,
            settings=settings,
            channel=channel,
            auth=auth_grpc.AuthServiceStub(channel),
            residents=res_grpc.ResidentServiceStub(channel),
        )
    finally:
        if channel is not None:
            await channel.close()
        if server is not None:
            await server.stop(grace=1)
        await vault.stop(grace=1)
    hits = find_pii(collect_blobs(home, [database_url]), people.issued_values())
    assert not hits, f"plaintext personal data found in: {hits}"
