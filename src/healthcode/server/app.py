"""Building and running the platform gRPC server.

``build_platform`` creates the shared objects (database, vault client, keys, SMS sender);
``build_server`` mounts every service behind the interceptors (access log -> errors -> auth),
with gRPC health checking and server reflection, on TLS/mTLS when configured.
"""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Sequence

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from healthcode.common.runtime import serve_until_stopped
from healthcode.server.common import paging
from healthcode.server.db.engine import Database
from healthcode.server.interceptors import AccessLogInterceptor, AuthInterceptor, ErrorInterceptor
from healthcode.server.platform import Platform, load_or_create_secret
from healthcode.server.settings import ServerSettings

log = structlog.get_logger("healthcode.server")

#: Every service of the platform: (import path of the servicer class, add-to-server function path,
#: full service name).
SERVICES: tuple[tuple[str, str, str], ...] = (
    (
        "healthcode.server.auth.service:AuthService",
        "healthcode_sdk._gen.healthcode.v1.auth_service_pb2_grpc:add_AuthServiceServicer_to_server",
        "healthcode.v1.AuthService",
    ),
    (
        "healthcode.server.residents.service:ResidentService",
        "healthcode_sdk._gen.healthcode.v1.resident_service_pb2_grpc:add_ResidentServiceServicer_to_server",
        "healthcode.v1.ResidentService",
    ),
    (
        "healthcode.server.codes.service:CodeService",
        "healthcode_sdk._gen.healthcode.v1.code_service_pb2_grpc:add_CodeServiceServicer_to_server",
        "healthcode.v1.CodeService",
    ),
    (
        "healthcode.server.verification.service:VerificationService",
        "healthcode_sdk._gen.healthcode.v1.verification_service_pb2_grpc:add_VerificationServiceServicer_to_server",
        "healthcode.v1.VerificationService",
    ),
    (
        "healthcode.server.checkpoints.service:CheckpointService",
        "healthcode_sdk._gen.healthcode.v1.checkpoint_service_pb2_grpc:add_CheckpointServiceServicer_to_server",
        "healthcode.v1.CheckpointService",
    ),
    (
        "healthcode.server.admin.service:AdminService",
        "healthcode_sdk._gen.healthcode.v1.admin_service_pb2_grpc:add_AdminServiceServicer_to_server",
        "healthcode.v1.AdminService",
    ),
)


def _load(path: str) -> object:
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)


async def build_platform(settings: ServerSettings) -> Platform:
    """Create the shared objects; runs database migrations first (call in the serving loop)."""
    from healthcode.server.auth.sms import make_sms_sender
    from healthcode.server.codes.keystore import KeyStore
    from healthcode.server.db.migrate import upgrade
    from healthcode.vault.client import VaultClient

    def prepare() -> tuple[bytes, Database]:
        settings.server_dir.mkdir(parents=True, exist_ok=True)
        upgrade(settings.database_url)
        secret = load_or_create_secret(settings.server_dir / "secret.key")
        return secret, Database.from_url(settings.database_url, threads=settings.db_threads)

    secret, db = await asyncio.to_thread(prepare)
    paging.set_token_key(secret)
    vault = VaultClient.connect(
        settings.privacy_vault_address,
        settings.privacy_vault_credential_value(),
        tls=_vault_tls(settings),
    )
    return Platform(
        settings=settings,
        db=db,
        vault=vault,
        secret=secret,
        keys=KeyStore(db, settings, secret),
        sms=make_sms_sender(settings, secret),
    )


def _vault_tls(settings: ServerSettings) -> grpc.ChannelCredentials | None:
    if settings.privacy_vault_tls_ca_file is None:
        return None
    cert = (
        settings.privacy_vault_tls_cert_file.read_bytes()
        if settings.privacy_vault_tls_cert_file
        else None
    )
    key = (
        settings.privacy_vault_tls_key_file.read_bytes()
        if settings.privacy_vault_tls_key_file
        else None
    )
    return grpc.ssl_channel_credentials(
        root_certificates=settings.privacy_vault_tls_ca_file.read_bytes(),
        private_key=key,
        certificate_chain=cert,
    )


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS (and mTLS when a client CA is configured) credentials, or None for plaintext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    client_ca = settings.tls_client_ca_file.read_bytes() if settings.tls_client_ca_file else None
    return grpc.ssl_server_credentials(
        [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())],
        root_certificates=client_ca,
        require_client_auth=client_ca is not None,
    )


def build_server(
    platform: Platform, *, services: Sequence[tuple[str, str, str]] = SERVICES
) -> tuple[grpc.aio.Server, health.aio.HealthServicer]:
    """Mount the services with interceptors, health checking and reflection (not yet started)."""
    from healthcode.server.auth.sessions import SessionAuthenticator

    server = grpc.aio.server(
        interceptors=[
            AccessLogInterceptor(),
            ErrorInterceptor(),
            AuthInterceptor(SessionAuthenticator(platform.db)),
        ],
        options=[
            ("grpc.max_receive_message_length", 8 * 1024 * 1024),
            ("grpc.max_concurrent_streams", 256),
            ("grpc.keepalive_time_ms", 60_000),
            ("grpc.http2.max_pings_without_data", 0),
        ],
        maximum_concurrent_rpcs=2048,
    )
    names = []
    for servicer_path, add_path, name in services:
        servicer_cls = _load(servicer_path)
        add = _load(add_path)
        add(servicer_cls(platform), server)  # type: ignore[operator]
        names.append(name)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection(
        [
            *names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    return server, health_servicer


class PlatformServer:
    """One server instance: ``await start()`` returns the bound port, ``await stop()`` ends it."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.port = 0
        self.platform: Platform | None = None
        self._server: grpc.aio.Server | None = None
        self._health: health.aio.HealthServicer | None = None
        self._housekeeping: asyncio.Task[None] | None = None

    async def start(self) -> int:
        """Migrate, build, bind and serve."""
        settings = self.settings
        self.platform = platform = await build_platform(settings)
        server, self._health = build_server(platform)
        creds = server_credentials(settings)
        port = (
            server.add_secure_port(settings.listen, creds)
            if creds
            else server.add_insecure_port(settings.listen)
        )
        if port == 0:
            raise RuntimeError(f"cannot listen on {settings.listen}")
        await server.start()
        self._server, self.port = server, port
        for _, _, name in SERVICES:
            await self._health.set(name, health_pb2.HealthCheckResponse.SERVING)
        await self._health.set("", health_pb2.HealthCheckResponse.SERVING)
        self._housekeeping = asyncio.create_task(_housekeeping(platform))
        log.info("server serving", port=port, tls=creds is not None)
        return port

    async def stop(self, grace: float = 5.0) -> None:
        """Drain calls, stop serving and release the database and the vault channel."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
        if self._server is not None and self._health is not None:
            await self._health.enter_graceful_shutdown()
            await self._server.stop(grace)
            self._server = None
        if self.platform is not None:
            await self.platform.vault.close()
            await asyncio.to_thread(self.platform.db.close)
            self.platform = None
        log.info("server stopped")


async def serve(
    settings: ServerSettings,
    *,
    ready: asyncio.Event | None = None,
    stop: asyncio.Event | None = None,
    freeze_heap: bool = False,
) -> None:
    """Run the server until ``stop`` is set (or forever); sets ``ready`` once serving.

    ``freeze_heap`` (for a process that only serves, as ``healthcode server``) excludes start-up
    objects from garbage collection (:func:`healthcode.common.runtime.freeze_startup_heap`).
    """
    await serve_until_stopped(
        PlatformServer(settings), ready=ready, stop=stop, freeze_heap=freeze_heap
    )


async def _housekeeping(platform: Platform) -> None:
    """Retention purge and other periodic work, once at start and then hourly."""
    from healthcode.server.identity import erase_expired_reservations
    from healthcode.server.retention import purge_expired

    while True:
        try:
            await platform.db.run(purge_expired, platform.settings)
            await erase_expired_reservations(platform)
        except Exception as exc:
            log.warning("housekeeping failed", error_type=type(exc).__name__)
        await asyncio.sleep(3600)
