"""mTLS: a client certificate mapped to a role authenticates without a bearer credential."""

from __future__ import annotations

import datetime as dt
import ipaddress

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from healthcode.common.errors import Unauthenticated
from healthcode.vault import FieldType, TokenizeItem, VaultClient
from tests.vault.helpers import phone


def _cert(name: str, issuer_key, issuer_name, key, *, ca: bool = False, server: bool = False):
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key or key, hashes.SHA256())


def _pem(obj) -> bytes:
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM)
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


@pytest.fixture
def pki(tmp_path):
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("test-ca", None, None, ca_key, ca=True)
    out = {"ca": _pem(ca)}
    for name, server in (("vault", True), ("platform-mtls", False), ("stranger", False)):
        key = ec.generate_private_key(ec.SECP256R1())
        out[name] = (_pem(key), _pem(_cert(name, ca_key, ca.subject, key, server=server)))
    for name in ("vault",):
        (tmp_path / f"{name}.key").write_bytes(out[name][0])
        (tmp_path / f"{name}.crt").write_bytes(out[name][1])
    (tmp_path / "ca.crt").write_bytes(out["ca"])
    return out


async def test_mtls_identity(vault_factory, pki, tmp_path) -> None:
    env = await vault_factory(
        tls_cert_file=tmp_path / "vault.crt",
        tls_key_file=tmp_path / "vault.key",
        tls_client_ca_file=tmp_path / "ca.crt",
        mtls_identities={"platform-mtls": "platform"},
    )

    def client(name: str, credential: str = "") -> VaultClient:
        creds = grpc.ssl_channel_credentials(pki["ca"], pki[name][0], pki[name][1])
        c = VaultClient.connect(env.address, credential, tls=creds)
        env.clients.append(c)
        return c

    res = await client("platform-mtls").tokenize([TokenizeItem(FieldType.PHONE, phone(3), "m1")])
    assert res[0].created
    with pytest.raises(Unauthenticated):  # valid certificate, but no role mapped to it
        await client("stranger").mask([res[0].token])
    # A bearer credential still works over the same TLS listener.
    assert await client("stranger", env.platform_credential).mask([res[0].token]) == ["139****0003"]
    with env.db().connect() as conn:
        rows = conn.exec_driver_sql("SELECT caller FROM audit_events").all()
    assert ("mtls:platform-mtls",) in [tuple(r) for r in rows]
