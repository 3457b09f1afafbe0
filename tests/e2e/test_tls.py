"""TLS and mTLS by configuration: the server requires device/client certificates from the dev CA,
and the server reaches the vault over mTLS, using `healthcode certs dev` material."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from healthcode_sdk._gen.healthcode.v1 import (
    verification_service_pb2,
    verification_service_pb2_grpc,
)

from healthcode.common.certs import create_dev_pki
from healthcode.server.app import PlatformServer
from healthcode.server.settings import ServerSettings
from healthcode.vault.server import VaultServer
from healthcode.vault.settings import VaultSettings


async def _run(tmp_path: Path) -> None:
    pki = create_dev_pki(tmp_path / "certs")
    vault = VaultServer(
        VaultSettings(
            home=tmp_path,
            listen="127.0.0.1:0",
            backend="local",
            tls_cert_file=pki["vault"].cert,
            tls_key_file=pki["vault"].key,
            tls_client_ca_file=pki["ca"].cert,
        )
    )
    vault_port = await vault.start()
    server = PlatformServer(
        ServerSettings(
            home=tmp_path,
            listen="127.0.0.1:0",
            privacy_vault_address=f"localhost:{vault_port}",
            privacy_vault_tls_ca_file=pki["ca"].cert,
            privacy_vault_tls_cert_file=pki["server-client"].cert,
            privacy_vault_tls_key_file=pki["server-client"].key,
            tls_cert_file=pki["server"].cert,
            tls_key_file=pki["server"].key,
            tls_client_ca_file=pki["ca"].cert,
        )
    )
    port = await server.start()
    try:
        ca = pki["ca"].cert.read_bytes()
        device = grpc.ssl_channel_credentials(
            root_certificates=ca,
            private_key=pki["device"].key.read_bytes(),
            certificate_chain=pki["device"].cert.read_bytes(),
        )
        async with grpc.aio.secure_channel(f"localhost:{port}", device) as channel:
            reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            trust = await verification_service_pb2_grpc.VerificationServiceStub(
                channel
            ).GetTrustList(verification_service_pb2.GetTrustListRequest())
            assert trust.keys
        # Without a client certificate the TLS handshake is refused.
        no_cert = grpc.ssl_channel_credentials(root_certificates=ca)
        async with grpc.aio.secure_channel(f"localhost:{port}", no_cert) as channel:
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await health_pb2_grpc.HealthStub(channel).Check(
                    health_pb2.HealthCheckRequest(), timeout=5
                )
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        # The server's own link to the vault runs over mTLS: a tokenize round trip works.
        from healthcode.vault.client import FieldType

        assert server.platform is not None
        tokens = await server.platform.vault.lookup(FieldType.PHONE, ["19900000000"])
        assert tokens == [None]
    finally:
        await server.stop(grace=1)
        await vault.stop(grace=1)


def test_mtls_between_device_server_and_vault(tmp_path: Path) -> None:
    asyncio.run(_run(tmp_path))
