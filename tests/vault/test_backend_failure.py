"""OpenBao stopped or sealed mid-run: PII paths answer UNAVAILABLE with a clear reason, keyless
paths keep working, and everything recovers when OpenBao returns, without restarting the vault."""

from __future__ import annotations

import asyncio
import time

import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from healthcode.common.errors import PermissionDenied, Unavailable
from healthcode.vault import FieldType, TokenizeItem
from healthcode.vault.audit import verify_database
from tests.vault.helpers import id_number, phone

pytestmark = [pytest.mark.openbao, pytest.mark.slow]


async def wait_health(env, want: int, within: float = 10.0) -> None:
    stub = health_pb2_grpc.HealthStub(env.channel())
    deadline = time.monotonic() + within
    status = None
    while time.monotonic() < deadline:
        status = (
            await stub.Check(
                health_pb2.HealthCheckRequest(service="healthcode.vault.v1.VaultService")
            )
        ).status
        if status == want:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"health stayed {status}")


async def test_openbao_stopped_and_sealed_mid_run(vault_factory, openbao_restartable) -> None:
    bao = openbao_restartable
    env = await vault_factory(
        "transit",
        "sqlite",
        transit_addr=bao.url,
        transit_token=bao.token,
        backend_check_interval=0.2,
    )
    client = env.client()
    res = await client.tokenize(
        [
            TokenizeItem(FieldType.ID_NUMBER, id_number(7), "p7"),
            TokenizeItem(FieldType.PHONE, phone(7), "p7"),
        ]
    )
    tokens = [r.token for r in res]
    assert await client.detokenize(tokens, "CORRECTION_REVIEW") == [id_number(7), phone(7)]
    await client.tokenize([TokenizeItem(FieldType.NAME, "孙九", "p9")])

    await asyncio.to_thread(bao.stop)
    await asyncio.sleep(0.3)  # past the health-probe interval
    # Fail closed even though the data key is still cached: plaintext needs a live backend.
    for call in (
        client.detokenize(tokens, "CORRECTION_REVIEW"),
        client.tokenize([TokenizeItem(FieldType.PHONE, phone(8), "p8")]),
        client.lookup(FieldType.PHONE, [phone(7)]),
    ):
        started = time.monotonic()
        with pytest.raises(Unavailable) as down:
            await call
        assert down.value.reason == "KEY_BACKEND_UNAVAILABLE"
        assert "unreachable" in down.value.message
        assert time.monotonic() - started < 5
    assert len(env.server.core.cache) == 0  # unwrapped keys were dropped
    # Paths that need no key still work, and policy denials are still audited.
    assert await client.mask(tokens) == [r.masked for r in res]
    assert await client.erase(["p9"]) == 1  # erasure needs no key either
    with pytest.raises(PermissionDenied):
        await client.detokenize(tokens, "IDENTITY_VERIFICATION")
    await wait_health(env, health_pb2.HealthCheckResponse.NOT_SERVING)

    await asyncio.to_thread(bao.start)  # same data, unsealed again; the vault was not restarted
    deadline = time.monotonic() + 15
    while True:
        try:
            values = await client.detokenize(tokens, "CORRECTION_REVIEW")
            break
        except Unavailable:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.3)
    assert values == [id_number(7), phone(7)]
    fresh = await client.tokenize([TokenizeItem(FieldType.PHONE, phone(8), "p8")])
    assert await client.lookup(FieldType.PHONE, [phone(7), phone(8)]) == [tokens[1], fresh[0].token]
    await wait_health(env, health_pb2.HealthCheckResponse.SERVING)

    # Sealing is the operator's emergency brake: it stops decryption at once.
    await asyncio.to_thread(bao.seal)
    await asyncio.sleep(0.3)
    with pytest.raises(Unavailable) as sealed:
        await client.detokenize(tokens, "CORRECTION_REVIEW")
    assert sealed.value.reason == "KEY_BACKEND_SEALED"
    await asyncio.to_thread(bao.unseal)
    await asyncio.sleep(0.3)
    assert await client.detokenize(tokens[:1], "CORRECTION_REVIEW") == [id_number(7)]

    outcomes = {(r.action, r.outcome, r.reason) for r in _events(env)}
    assert ("DETOKENIZE", "FAILED", "KEY_BACKEND_UNAVAILABLE") in outcomes
    assert ("DETOKENIZE", "FAILED", "KEY_BACKEND_SEALED") in outcomes
    assert ("DETOKENIZE", "DENIED", "POLICY_DENIED") in outcomes
    assert verify_database(env.db()).ok


def _events(env):
    from sqlalchemy import select

    from healthcode.vault.models import audit_events

    with env.db().connect() as conn:
        return conn.execute(select(audit_events)).all()
