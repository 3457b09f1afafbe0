"""The vault over real gRPC: local and transit backends, SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from healthcode_sdk._gen.healthcode.vault.v1 import vault_pb2, vault_service_pb2
from sqlalchemy import select, update

from healthcode.common.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    Unauthenticated,
    error_info,
    field_violations,
)
from healthcode.vault import FieldType, TokenizeItem
from healthcode.vault.audit import verify_database
from healthcode.vault.auth import Role
from healthcode.vault.errors import DataLoss
from healthcode.vault.models import audit_events, subject_keys, tokens
from tests.vault.conftest import COMBOS, bearer
from tests.vault.helpers import id_number, phone

pytestmark = pytest.mark.slow


def person(n: int, subject: str | None = None) -> list[TokenizeItem]:
    s = subject or f"person-{n}"
    return [
        TokenizeItem(FieldType.ID_NUMBER, id_number(n), s),
        TokenizeItem(FieldType.NAME, "张三丰", s),
        TokenizeItem(FieldType.PHONE, phone(n), s),
        TokenizeItem(FieldType.ADDRESS, "四川省攀枝花市东区炳草岗大街 1 号", s),
    ]


def audit_rows(env, action: str) -> list:
    with env.db().connect() as conn:
        return conn.execute(
            select(audit_events).where(audit_events.c.action == action).order_by(audit_events.c.id)
        ).all()


@pytest.mark.parametrize(("backend", "db"), COMBOS)
async def test_full_lifecycle(vault_factory, backend: str, db: str) -> None:
    env = await vault_factory(backend, db)
    client = env.client()

    # Tokenize: one round trip, tokens are opaque, masks follow Chinese convention.
    results = await client.tokenize(person(1))
    assert [r.created for r in results] == [True] * 4
    assert [r.token[:4] for r in results] == ["idn_", "nam_", "phn_", "adr_"]
    assert results[0].masked == id_number(1)[0] + "*" * 15 + id_number(1)[-2:]
    assert results[1].masked == "张**"
    assert results[2].masked == "139****0001"
    assert all(id_number(1) not in r.token and phone(1) not in r.token for r in results)

    # Same values again (phone written differently): the blind index finds the same tokens.
    again = await client.tokenize(
        [
            TokenizeItem(FieldType.ID_NUMBER, id_number(1).lower(), "person-1"),
            TokenizeItem(FieldType.PHONE, f"+86 139-{phone(1)[3:7]}-{phone(1)[7:]}", "person-1"),
            TokenizeItem(FieldType.NAME, "张三丰", "person-1"),
        ]
    )
    assert [a.token for a in again] == [results[0].token, results[2].token, results[1].token]
    assert [a.created for a in again] == [False, False, False]
    # A duplicate inside one batch is stored once.
    dup = await client.tokenize([*person(2), TokenizeItem(FieldType.PHONE, phone(2), "person-2")])
    assert dup[2].token == dup[4].token
    # The same name for another person is a different token (names do not link people).
    assert dup[1].token != results[1].token

    # Lookup by value: ID numbers and phones only; unknown -> None.
    assert await client.lookup(FieldType.PHONE, [phone(1), phone(999), phone(2)]) == [
        results[2].token,
        None,
        dup[2].token,
    ]
    assert await client.lookup(FieldType.ID_NUMBER, [id_number(1)]) == [results[0].token]
    with pytest.raises(InvalidArgument) as bad_lookup:
        await client.lookup(FieldType.NAME, ["张三丰"])
    assert [v.field for v in bad_lookup.value.violations] == ["field_type"]

    # Detokenize with an allowed purpose: plaintext in canonical form.
    toks = [r.token for r in results]
    assert await client.detokenize(toks, "CORRECTION_REVIEW") == [
        id_number(1),
        "张三丰",
        phone(1),
        "四川省攀枝花市东区炳草岗大街 1 号",
    ]
    # A purpose the default policy allows only masked, and only for name and ID number.
    masked = await client.detokenize_items(toks[:2], "IDENTITY_VERIFICATION")
    assert [m.masked for m in masked] == [True] * 2
    assert [m.value for m in masked] == [r.masked for r in results[:2]]
    with pytest.raises(PermissionDenied) as no_phone:
        await client.detokenize(toks, "IDENTITY_VERIFICATION")
    assert no_phone.value.reason == "POLICY_DENIED"
    assert await client.mask(toks) == [r.masked for r in results]

    # Erase: crypto-shred; detokenize, mask and lookup fail or find nothing afterwards.
    assert await client.erase(["person-1", "nobody"]) == 1
    assert await client.erase(["person-1"]) == 0
    with pytest.raises(NotFound) as gone:
        await client.detokenize(toks[:1], "CORRECTION_REVIEW")
    assert gone.value.reason == "TOKEN_ERASED"
    assert await client.lookup(FieldType.PHONE, [phone(1)]) == [None]
    with env.db().connect() as conn:
        key_row = conn.execute(
            select(subject_keys).where(subject_keys.c.subject_id == "person-1")
        ).one()
        token_rows = conn.execute(select(tokens).where(tokens.c.subject_id == "person-1")).all()
    assert key_row.wrapped_dek is None and key_row.erased_at is not None
    assert all(r.ciphertext is None and r.bidx is None and r.masked is None for r in token_rows)
    # An erased subject cannot be silently resurrected.
    with pytest.raises(FailedPrecondition) as resurrect:
        await client.tokenize([TokenizeItem(FieldType.NAME, "李四", "person-1")])
    assert resurrect.value.reason == "SUBJECT_ERASED"
    # The erased phone number is free for a new person.
    fresh = await client.tokenize([TokenizeItem(FieldType.PHONE, phone(1), "person-3")])
    assert fresh[0].created and fresh[0].token != results[2].token

    # Other person keeps working; every call is in a valid audit chain.
    assert await client.detokenize([dup[0].token], "DATA_SUBJECT_REQUEST") == [id_number(2)]
    report = verify_database(env.db())
    assert report.ok, report.findings
    actions = [r.action for r in audit_rows(env, "DETOKENIZE")]
    assert len(actions) == 5  # plain, masked, denied, erased token (failed), other person


@pytest.mark.parametrize(("backend", "db"), COMBOS)
async def test_rotate_rewrap_and_restart(vault_factory, backend: str, db: str) -> None:
    env = await vault_factory(backend, db)
    client = env.client()
    before = await client.tokenize(person(10) + person(11))
    admin = env.vault_stub()
    admin_cred = env.credential(Role.KEY_ADMIN, "key-admin")

    rotated = await admin.RotateKeys(
        vault_service_pb2.RotateKeysRequest(reference="CHG-1"), metadata=bearer(admin_cred)
    )
    assert rotated.current_version == 2
    assert rotated.outdated_data_keys == 2  # one data key per person
    after = await client.tokenize(person(12))  # new subject wrapped with version 2
    with env.db().connect() as conn:
        versions = {
            r.subject_id: r.kek_version
            for r in conn.execute(select(subject_keys.c.subject_id, subject_keys.c.kek_version))
        }
    assert versions == {"person-10": 1, "person-11": 1, "person-12": 2}

    partial = await admin.Rewrap(
        vault_service_pb2.RewrapRequest(limit=1), metadata=bearer(admin_cred)
    )
    assert (partial.rewrapped_count, partial.remaining_count) == (1, 1)
    done = await admin.Rewrap(
        vault_service_pb2.RewrapRequest(retire_old_versions=True), metadata=bearer(admin_cred)
    )
    assert (done.rewrapped_count, done.remaining_count, done.current_version) == (1, 0, 2)
    assert done.min_decryption_version == 2

    # The platform role may not manage keys; key admins may not read data.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await admin.RotateKeys(
            vault_service_pb2.RotateKeysRequest(), metadata=bearer(env.platform_credential)
        )
    assert denied.value.code() is grpc.StatusCode.PERMISSION_DENIED
    assert error_info(denied.value).reason == "ROLE_DENIED"

    # A fresh process (no cached keys) still decrypts everything, old and new.
    await env.restart()
    client = env.client()
    values = await client.detokenize(
        [before[0].token, before[4].token, after[2].token], "EPIDEMIOLOGICAL_INVESTIGATION"
    )
    assert values == [id_number(10), id_number(11), phone(12)]
    # Dedupe survives the restart (blind-index key unchanged by KEK rotation).
    assert (await client.tokenize(person(10)))[0].token == before[0].token
    assert verify_database(env.db()).ok


@pytest.mark.parametrize(("backend", "db"), [COMBOS[0], COMBOS[3]])
async def test_policy_denial_is_audited(vault_factory, backend: str, db: str) -> None:
    env = await vault_factory(backend, db)
    env.settings.effective_policy_file.write_text(
        'version = 7\n[[rule]]\ncallers = ["role:platform"]\nfields = ["*"]\n'
        'purposes = ["CORRECTION_REVIEW"]\naccess = "plain"\n'
        '[[rule]]\ncallers = ["platform-server"]\nfields = ["ID_NUMBER"]\n'
        'purposes = ["CORRECTION_REVIEW"]\naccess = "masked"\n',
        encoding="utf-8",
    )
    env.server.core.policy.reload_now()
    client = env.client()
    res = await client.tokenize(person(20))
    items = await client.detokenize_items(
        [res[0].token, res[1].token], "CORRECTION_REVIEW", reference="CASE-2026/17"
    )
    # The narrower masked rule wins over the broad plain rule for ID numbers only.
    assert [(i.masked, i.value) for i in items] == [(True, res[0].masked), (False, "张三丰")]

    with pytest.raises(PermissionDenied) as denied:
        await client.detokenize([res[0].token], "EPIDEMIOLOGICAL_INVESTIGATION")
    assert denied.value.reason == "POLICY_DENIED"
    assert denied.value.metadata["policy_version"] == "7"
    rows = audit_rows(env, "DETOKENIZE")
    assert [(r.outcome, r.purpose, r.policy_version) for r in rows] == [
        ("ALLOWED", "CORRECTION_REVIEW", 7),
        ("DENIED", "EPIDEMIOLOGICAL_INVESTIGATION", 7),
    ]
    assert rows[0].reference == "CASE-2026/17"
    assert res[0].token in rows[1].tokens and rows[1].reason == "POLICY_DENIED"
    # The client asks for columns; a plain request gets the same answer as one message per item.
    stub, md = env.vault_stub(), bearer(env.platform_credential)
    asked = vault_service_pb2.DetokenizeBatchRequest(
        tokens=[res[0].token, res[1].token], purpose=vault_pb2.PURPOSE_CORRECTION_REVIEW
    )
    per_item = await stub.DetokenizeBatch(asked, metadata=md)
    asked.columns = True
    in_columns = await stub.DetokenizeBatch(asked, metadata=md)
    assert not per_item.HasField("columns") and not in_columns.values
    assert per_item.policy_version == in_columns.policy_version == 7
    assert [(v.token, v.value, v.masked, v.field_type) for v in per_item.values] == list(
        zip(
            asked.tokens,
            in_columns.columns.values,
            in_columns.columns.masked,
            in_columns.columns.field_types,
            strict=True,
        )
    )
    assert [v.field_type for v in per_item.values] == [
        vault_pb2.FIELD_TYPE_ID_NUMBER,
        vault_pb2.FIELD_TYPE_NAME,
    ]
    # No value ever reaches the audit log.
    with env.db().connect() as conn:
        dump = " ".join(str(tuple(r)) for r in conn.execute(select(audit_events)))
    assert id_number(20) not in dump and "张三丰" not in dump and phone(20) not in dump


async def test_invalid_input_names_every_field(vault_factory) -> None:
    env = await vault_factory()
    stub = env.vault_stub()
    md = bearer(env.platform_credential)
    request = vault_service_pb2.TokenizeBatchRequest(
        items=[
            vault_service_pb2.TokenizeItem(
                field_type=vault_pb2.FIELD_TYPE_ID_NUMBER,
                value=id_number(1)[:-1] + ("0" if id_number(1)[-1] != "0" else "1"),
                subject_id="p1",
            ),
            vault_service_pb2.TokenizeItem(
                field_type=vault_pb2.FIELD_TYPE_PHONE, value="12345", subject_id="p1"
            ),
            vault_service_pb2.TokenizeItem(
                field_type=vault_pb2.FIELD_TYPE_NAME, value="王五", subject_id="bad id with spaces"
            ),
            vault_service_pb2.TokenizeItem(value="x", subject_id="p1"),
        ]
    )
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.TokenizeBatch(request, metadata=md)
    assert err.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["items[3].field_type"]
    request.items[3].field_type = vault_pb2.FIELD_TYPE_ADDRESS
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.TokenizeBatch(request, metadata=md)
    assert field_violations(err.value) == [
        "items[0].value",
        "items[1].value",
        "items[2].subject_id",
    ]
    assert "12345" not in (err.value.details() or "")
    with env.db().connect() as conn:  # nothing half-written
        assert conn.execute(select(tokens)).all() == []

    client = env.client()
    with pytest.raises(InvalidArgument) as empty:
        await client.tokenize([])
    assert [v.field for v in empty.value.violations] == ["items"]
    for call, field in [
        (
            stub.DetokenizeBatch(
                vault_service_pb2.DetokenizeBatchRequest(tokens=["idn_x"]), metadata=md
            ),
            "purpose",
        ),
        (
            stub.DetokenizeBatch(
                vault_service_pb2.DetokenizeBatchRequest(
                    tokens=["nope"], purpose=vault_pb2.PURPOSE_CORRECTION_REVIEW
                ),
                metadata=md,
            ),
            "tokens[0]",
        ),
        (
            stub.MaskBatch(
                vault_service_pb2.MaskBatchRequest(tokens=["idn_" + "a" * 26, ""]), metadata=md
            ),
            "tokens[1]",
        ),
        (
            stub.Erase(vault_service_pb2.EraseRequest(subject_ids=["ok", "no/slash"]), metadata=md),
            "subject_ids[1]",
        ),
        (
            stub.LookupByValue(
                vault_service_pb2.LookupByValueRequest(
                    field_type=vault_pb2.FIELD_TYPE_PHONE, values=["13912345678", "0"]
                ),
                metadata=md,
            ),
            "values[1]",
        ),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await call
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT, field
        assert field_violations(bad.value) == [field]
        assert error_info(bad.value).domain == "healthcode.vault"
    with pytest.raises(NotFound) as unknown:
        await client.mask(["idn_" + "a" * 26])
    assert unknown.value.reason == "TOKEN_NOT_FOUND"


async def test_value_of_another_subject_is_refused(vault_factory) -> None:
    env = await vault_factory()
    client = env.client()
    await client.tokenize([TokenizeItem(FieldType.ID_NUMBER, id_number(5), "a")])
    with pytest.raises(FailedPrecondition) as err:
        await client.tokenize(
            [
                TokenizeItem(FieldType.NAME, "赵六", "b"),
                TokenizeItem(FieldType.ID_NUMBER, id_number(5), "b"),
            ]
        )
    assert err.value.reason == "VALUE_HELD_BY_OTHER_SUBJECT"
    assert err.value.metadata["index"] == "1"
    with env.db().connect() as conn:  # the whole batch was refused
        assert conn.execute(select(tokens).where(tokens.c.subject_id == "b")).all() == []


@pytest.mark.parametrize(("backend", "db"), [COMBOS[0], COMBOS[1]])
async def test_tampering_is_a_data_integrity_error(vault_factory, backend: str, db: str) -> None:
    env = await vault_factory(backend, db)
    client = env.client()
    res = await client.tokenize(person(30) + person(31))
    with env.db().begin() as conn:
        blob = conn.execute(
            select(tokens.c.ciphertext).where(tokens.c.token == res[0].token)
        ).scalar_one()
        flipped = blob[:-1] + bytes([blob[-1] ^ 1])
        conn.execute(
            update(tokens).where(tokens.c.token == res[0].token).values(ciphertext=flipped)
        )
        # Moving another row's ciphertext into this row is caught by the associated data.
        other = conn.execute(
            select(tokens.c.ciphertext).where(tokens.c.token == res[4].token)
        ).scalar_one()
        conn.execute(update(tokens).where(tokens.c.token == res[1].token).values(ciphertext=other))
    with pytest.raises(DataLoss) as err:
        await client.detokenize([res[2].token, res[0].token], "CORRECTION_REVIEW")
    assert err.value.code is grpc.StatusCode.DATA_LOSS
    assert err.value.reason == "CIPHERTEXT_INTEGRITY_FAILURE"
    assert err.value.metadata == {"index": "1", "token": res[0].token}
    with pytest.raises(DataLoss):
        await client.detokenize([res[1].token], "CORRECTION_REVIEW")

    # A tampered wrapped data key is caught when it is unwrapped (fresh process, no cache).
    with env.db().begin() as conn:
        wrapped = conn.execute(
            select(subject_keys.c.wrapped_dek).where(subject_keys.c.subject_id == "person-31")
        ).scalar_one()
        head, _, body = wrapped.rpartition(":")
        body = ("A" if body[0] != "A" else "B") + body[1:]
        conn.execute(
            update(subject_keys)
            .where(subject_keys.c.subject_id == "person-31")
            .values(wrapped_dek=f"{head}:{body}")
        )
    await env.restart()
    client = env.client()
    with pytest.raises(DataLoss) as wrapped_err:
        await client.detokenize([res[4].token], "CORRECTION_REVIEW")
    assert wrapped_err.value.reason == "WRAPPED_KEY_INTEGRITY_FAILURE"
    assert await client.detokenize([res[2].token], "CORRECTION_REVIEW") == [phone(30)]
    failed = [r for r in audit_rows(env, "DETOKENIZE") if r.outcome == "FAILED"]
    assert {r.reason for r in failed} == {
        "CIPHERTEXT_INTEGRITY_FAILURE",
        "WRAPPED_KEY_INTEGRITY_FAILURE",
    }


async def test_authentication_and_roles(vault_factory) -> None:
    env = await vault_factory()
    stub = env.vault_stub()
    request = vault_service_pb2.MaskBatchRequest(tokens=["idn_" + "a" * 26])
    for metadata in [
        (),
        bearer("hcv1.000000000000.wrong"),
        bearer("garbage"),
        (("authorization", "Basic abc"),),
    ]:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stub.MaskBatch(request, metadata=metadata)
        assert err.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert error_info(err.value).reason == "UNAUTHENTICATED"
    officer = env.client(env.officer_credential)
    with pytest.raises(PermissionDenied) as role:
        await officer.tokenize(person(40))
    assert role.value.reason == "ROLE_DENIED"
    assert audit_rows(env, "TOKENIZE")[-1].outcome == "DENIED"
    # The credential files are private.
    for path in (
        env.settings.platform_credential_file,
        env.settings.officer_credential_file,
        env.settings.effective_key_file,
    ):
        assert path.stat().st_mode & 0o777 == 0o600
    # Revocation takes effect (the verifier caches for a few seconds; a new server has no cache).
    from healthcode.vault.auth import revoke_credentials

    assert revoke_credentials(env.db(), name="platform-server") == 1
    await env.restart()  # a new platform credential file is issued on start
    with pytest.raises(Unauthenticated):
        await env.client(env.officer_credential.replace(env.officer_credential[-4:], "AAAA")).mask(
            ["idn_" + "a" * 26]
        )
    assert await env.client().lookup(FieldType.PHONE, [phone(1)]) == [None]


async def test_health_and_reflection(vault_factory) -> None:
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

    env = await vault_factory()
    ch = env.channel()
    health = health_pb2_grpc.HealthStub(ch)
    for service in ("", "healthcode.vault.v1.VaultService", "healthcode.vault.v1.AuditService"):
        resp = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert resp.status == health_pb2.HealthCheckResponse.SERVING
    refl = reflection_pb2_grpc.ServerReflectionStub(ch)

    async def requests():
        yield reflection_pb2.ServerReflectionRequest(list_services="")

    names = []
    async for resp in refl.ServerReflectionInfo(requests()):
        names = [s.name for s in resp.list_services_response.service]
    assert "healthcode.vault.v1.VaultService" in names
    assert "healthcode.vault.v1.AuditService" in names


async def test_client_maps_an_unreachable_vault_to_unavailable() -> None:
    import socket

    from healthcode.common.errors import Unavailable
    from healthcode.vault import VaultClient

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = VaultClient.connect(f"127.0.0.1:{port}", "hcv1.000000000000.x", timeout=1.0)
    try:
        with pytest.raises(Unavailable) as err:
            await client.lookup(FieldType.PHONE, [phone(1)])
        assert err.value.reason == "VAULT_UNAVAILABLE"
        assert err.value.domain == "healthcode.vault"
    finally:
        await client.close()
