"""Assembling and running the vault process.

``VaultServer`` owns everything (database, key backend, audit signer, gRPC server); tests and
``healthcode up`` use it directly. :func:`run_vault` runs one until cancelled or until ``stop``
is set; :func:`serve` is the blocking entry point with signal handling.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from healthcode_sdk._gen.healthcode.vault.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    vault_service_pb2,
    vault_service_pb2_grpc,
)
from sqlalchemy import Engine

from healthcode.common.runtime import serve_until_stopped
from healthcode.vault.audit import AuditLog, AuditSigner
from healthcode.vault.auth import CredentialVerifier, Role, ensure_credential_file
from healthcode.vault.core import VaultCore
from healthcode.vault.db import create_vault_engine, migrate
from healthcode.vault.dek_cache import DekCache
from healthcode.vault.interceptors import AuthInterceptor
from healthcode.vault.keys import BackendUnavailable, KeyBackend, create_backend
from healthcode.vault.policy import PolicyStore
from healthcode.vault.service import AuditServicer, VaultServicer
from healthcode.vault.settings import VaultSettings

log = structlog.get_logger(__name__)

VAULT_SERVICE = vault_service_pb2.DESCRIPTOR.services_by_name["VaultService"].full_name
AUDIT_SERVICE = audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name
PLATFORM_CREDENTIAL_NAME = "platform-server"
OFFICER_CREDENTIAL_NAME = "security-officer"


def open_components(
    settings: VaultSettings, *, startup_timeout: float = 30.0
) -> tuple[Engine, KeyBackend, AuditSigner]:
    """Database (migrated), key backend (reachable) and the audit signer."""
    settings.vault_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    engine = create_vault_engine(settings.effective_database_url)
    migrate(engine)
    backend = create_backend(settings)
    deadline = time.monotonic() + startup_timeout
    while True:
        try:
            backend.check()
            signer = AuditSigner.load_or_create(engine, backend)
            return engine, backend, signer
        except BackendUnavailable as exc:
            if time.monotonic() > deadline:
                raise
            log.warning("vault.startup.backend_waiting", reason=exc.reason)
            time.sleep(1.0)


class VaultServer:
    """One vault instance: start, serve, stop."""

    def __init__(self, settings: VaultSettings) -> None:
        self.settings = settings
        self.port = 0
        self._server: grpc.aio.Server | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._executor = ThreadPoolExecutor(max_workers=8, thread_name_prefix="vault")
        self.core: VaultCore | None = None
        self._health = health.aio.HealthServicer()

    async def start(self) -> int:
        """Open everything, bind and start serving; returns the bound port."""
        settings = self.settings
        loop = asyncio.get_running_loop()
        engine, backend, signer = await loop.run_in_executor(
            self._executor, open_components, settings
        )
        policy = await loop.run_in_executor(
            self._executor, lambda: PolicyStore(settings.effective_policy_file)
        )
        self.core = core = VaultCore(
            engine,
            backend,
            policy,
            AuditLog(signer),
            cache=DekCache(settings.dek_cache_size, settings.dek_cache_ttl),
            max_batch=settings.max_batch,
            backend_check_interval=settings.backend_check_interval,
        )

        def credentials() -> None:
            if ensure_credential_file(
                engine, settings.platform_credential_file, PLATFORM_CREDENTIAL_NAME, Role.PLATFORM
            ):
                log.info("vault.credential.created", file=str(settings.platform_credential_file))
            if ensure_credential_file(
                engine,
                settings.officer_credential_file,
                OFFICER_CREDENTIAL_NAME,
                Role.SECURITY_OFFICER,
            ):
                log.info("vault.credential.created", file=str(settings.officer_credential_file))

        await loop.run_in_executor(self._executor, credentials)
        server = grpc.aio.server(
            interceptors=[AuthInterceptor(CredentialVerifier(engine), settings.mtls_identities)],
            options=[("grpc.max_receive_message_length", 16 * 1024 * 1024)],
        )
        vault_service_pb2_grpc.add_VaultServiceServicer_to_server(
            VaultServicer(core, self._executor), server
        )
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(
            AuditServicer(core, self._executor), server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self._health, server)
        reflection.enable_server_reflection(
            (VAULT_SERVICE, AUDIT_SERVICE, health.SERVICE_NAME, reflection.SERVICE_NAME), server
        )
        if settings.tls_cert_file and settings.tls_key_file:
            client_ca = (
                settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
            )
            creds = grpc.ssl_server_credentials(
                [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
                root_certificates=client_ca,
                require_client_auth=client_ca is not None,
            )
            self.port = server.add_secure_port(settings.listen, creds)
        else:
            self.port = server.add_insecure_port(settings.listen)
        await server.start()
        self._server = server
        for name in ("", VAULT_SERVICE, AUDIT_SERVICE):
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        self._tasks = [
            asyncio.create_task(self._roots_loop()),
            asyncio.create_task(self._index_loop()),
            asyncio.create_task(self._health_loop()),
        ]
        host = settings.listen.rsplit(":", 1)[0]
        log.info("vault.serving", address=f"{host}:{self.port}", backend=backend.name)
        return self.port

    async def _roots_loop(self) -> None:
        assert self.core is not None
        core = self.core
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.audit_root_interval)
            try:
                await loop.run_in_executor(self._executor, core.audit.sign_root, core.engine)
            except Exception as exc:
                log.warning("vault.audit.root_failed", error_type=type(exc).__name__)

    async def _index_loop(self) -> None:
        assert self.core is not None
        core = self.core
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(self.settings.audit_index_interval)
            try:
                while await loop.run_in_executor(
                    self._executor, core.audit.index_tokens, core.engine
                ):
                    pass
            except Exception as exc:
                log.warning("vault.audit.index_failed", error_type=type(exc).__name__)

    async def _health_loop(self) -> None:
        assert self.core is not None
        core = self.core
        loop = asyncio.get_running_loop()
        serving = True
        while True:
            await asyncio.sleep(max(self.settings.backend_check_interval, 1.0))
            ok = await loop.run_in_executor(self._executor, core.probe_backend)
            if ok != serving:
                serving = ok
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if ok
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                await self._health.set(VAULT_SERVICE, status)

    async def stop(self, grace: float = 2.0) -> None:
        """Stop serving, sign a final root and release everything."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._server is not None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(grace)
            self._server = None
        if self.core is not None:
            core = self.core
            loop = asyncio.get_running_loop()
            try:
                await loop.run_in_executor(self._executor, core.audit.sign_root, core.engine)
            except Exception as exc:
                log.warning("vault.audit.final_root_failed", error_type=type(exc).__name__)
            core.backend.close()
            core.engine.dispose()
            self.core = None
        self._executor.shutdown(wait=False, cancel_futures=True)


async def run_vault(
    settings: VaultSettings | None = None,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    *,
    freeze_heap: bool = False,
) -> None:
    """Run the vault until ``stop`` is set or the task is cancelled; set ``ready`` once serving.

    ``healthcode up`` runs this as a task next to the platform server (or runs
    ``healthcode vault serve`` as a subprocess and waits for its health check). ``freeze_heap``
    (for a process that only serves) excludes start-up objects from garbage collection
    (:func:`healthcode.common.runtime.freeze_startup_heap`).
    """
    await serve_until_stopped(
        VaultServer(settings or VaultSettings()), ready=ready, stop=stop, freeze_heap=freeze_heap
    )


def serve(settings: VaultSettings | None = None) -> None:
    """Blocking entry point: serve until SIGINT or SIGTERM."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await run_vault(settings, stop=stop, freeze_heap=True)

    asyncio.run(main())
