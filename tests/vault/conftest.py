"""Real vault servers (port 0, real gRPC) on SQLite/PostgreSQL with the local/transit backends."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from healthcode_sdk._gen.healthcode.vault.v1 import audit_service_pb2_grpc, vault_service_pb2_grpc
from sqlalchemy import Engine, create_engine

from healthcode.vault import VaultClient, VaultServer, VaultSettings
from healthcode.vault.auth import Role, create_credential, read_credential_file


@dataclass
class VaultEnv:
    """A running vault plus clients for each role."""

    settings: VaultSettings
    server: VaultServer
    address: str = ""
    clients: list[VaultClient] = field(default_factory=list)
    channels: list[grpc.aio.Channel] = field(default_factory=list)
    _engine: Engine | None = None

    @property
    def platform_credential(self) -> str:
        return read_credential_file(self.settings.platform_credential_file)

    @property
    def officer_credential(self) -> str:
        return read_credential_file(self.settings.officer_credential_file)

    def client(self, credential: str | None = None) -> VaultClient:
        c = VaultClient.connect(self.address, credential or self.platform_credential)
        self.clients.append(c)
        return c

    def channel(self) -> grpc.aio.Channel:
        ch = grpc.aio.insecure_channel(self.address)
        self.channels.append(ch)
        return ch

    def vault_stub(self) -> vault_service_pb2_grpc.VaultServiceStub:
        return vault_service_pb2_grpc.VaultServiceStub(self.channel())

    def audit_stub(self) -> audit_service_pb2_grpc.AuditServiceStub:
        return audit_service_pb2_grpc.AuditServiceStub(self.channel())

    def credential(self, role: Role, name: str) -> str:
        return create_credential(self.db(), name, role)

    def db(self) -> Engine:
        """A separate engine on the vault's database, for tampering like an attacker would."""
        if self._engine is None:
            self._engine = create_engine(self.settings.effective_database_url)
        return self._engine

    async def start(self) -> None:
        self.server = VaultServer(self.settings)
        port = await self.server.start()
        self.address = f"127.0.0.1:{port}"

    async def restart(self) -> None:
        """Stop the vault process state entirely and start a new server on the same data."""
        await self.close_clients()
        await self.server.stop()
        await self.start()

    async def close_clients(self) -> None:
        for c in self.clients:
            await c.close()
        for ch in self.channels:
            await ch.close()
        self.clients.clear()
        self.channels.clear()

    async def close(self) -> None:
        await self.close_clients()
        await self.server.stop()
        if self._engine is not None:
            self._engine.dispose()


def bearer(credential: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {credential}"),)


VaultFactory = Callable[..., Any]


@pytest.fixture
async def vault_factory(
    request: pytest.FixtureRequest, tmp_path: Path
) -> AsyncIterator[VaultFactory]:
    """Start vaults: ``await vault_factory(backend, db)`` (local|transit, sqlite|postgresql)."""
    envs: list[VaultEnv] = []

    async def make(backend: str = "local", db: str = "sqlite", **overrides: Any) -> VaultEnv:
        home = tmp_path / f"home-{len(envs)}"
        kwargs: dict[str, Any] = {
            "home": home,
            "listen": "127.0.0.1:0",
            "backend": backend,
            "audit_root_interval": 3600.0,
        }
        if db == "postgresql":
            factory = request.getfixturevalue("pg_database_factory")
            kwargs["database_url"] = factory("vault")
        if backend == "transit":
            bao = request.getfixturevalue("openbao")
            suffix = secrets.token_hex(4)
            kwargs.update(
                transit_addr=bao.url,
                transit_token=bao.token,
                transit_kek_name=f"kek-{suffix}",
                transit_bidx_name=f"bidx-{suffix}",
            )
        kwargs.update(overrides)
        env = VaultEnv(settings=VaultSettings(**kwargs), server=None)  # type: ignore[arg-type]
        await env.start()
        envs.append(env)
        return env

    yield make
    for env in envs:
        await env.close()


COMBOS = [
    pytest.param("local", "sqlite", id="local-sqlite"),
    pytest.param("transit", "sqlite", id="transit-sqlite", marks=pytest.mark.openbao),
    pytest.param("local", "postgresql", id="local-postgresql", marks=pytest.mark.postgres),
    pytest.param(
        "transit",
        "postgresql",
        id="transit-postgresql",
        marks=[pytest.mark.openbao, pytest.mark.postgres],
    ),
]
