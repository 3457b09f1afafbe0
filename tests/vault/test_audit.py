"""The audit log: tampering directly in the table is detected and named; listing and export."""

from __future__ import annotations

import json
import os

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from healthcode_sdk._gen.healthcode.vault.v1 import audit_service_pb2, vault_pb2
from sqlalchemy import delete, insert, select, update
from typer.testing import CliRunner

from healthcode.common.errors import PermissionDenied
from healthcode.vault import FieldType, TokenizeItem
from healthcode.vault.audit import chain_hash, verify_database
from healthcode.vault.cli import vault_app
from healthcode.vault.models import audit_events
from tests.vault.conftest import COMBOS, bearer
from tests.vault.helpers import id_number, phone

pytestmark = pytest.mark.slow


async def populate(env, n: int = 10) -> list[str]:
    """Make ``n`` audit events (tokenize once, then detokenize/mask) and sign a root midway."""
    client = env.client()
    res = await client.tokenize(
        [
            TokenizeItem(FieldType.ID_NUMBER, id_number(1), "p1"),
            TokenizeItem(FieldType.PHONE, phone(1), "p1"),
        ]
    )
    tokens = [r.token for r in res]
    for i in range(n - 1):
        if i == 4:
            env.server.core.audit.sign_root(env.server.core.engine)
        if i % 2:
            await client.mask(tokens)
        else:
            await client.detokenize(tokens, "CORRECTION_REVIEW")
    return tokens


def rows(env) -> list[dict]:
    with env.db().connect() as conn:
        return [
            dict(r._mapping) for r in conn.execute(select(audit_events).order_by(audit_events.c.id))
        ]


def kinds(report) -> list[tuple[str, int, int]]:
    return [(f.kind.value, f.seq, f.last_seq) for f in report.findings]


def tamper_modify(env) -> None:
    with env.db().begin() as conn:
        conn.execute(
            update(audit_events).where(audit_events.c.seq == 3).values(caller="someone-else")
        )


def tamper_modify_rehash(env) -> None:
    with env.db().begin() as conn:
        conn.execute(
            update(audit_events)
            .where(audit_events.c.seq == 4)
            .values(outcome="DENIED", hash=b"\x01" * 32)
        )


def tamper_delete(env) -> None:
    with env.db().begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq.in_([5, 6])))


def tamper_insert(env) -> None:
    last = rows(env)[-1]
    forged = {k: v for k, v in last.items() if k != "id"}
    forged.update(
        seq=last["seq"] + 1,
        prev_hash=last["hash"],
        caller="intruder",
        event_id="00000000-0000-0000-0000-000000000000",
    )
    from healthcode.vault.audit import canonical_content

    content = canonical_content(
        **{
            k: (
                json.loads(forged[k])
                if k in ("tokens", "subject_ids", "field_types")
                else forged[k]
            )
            for k in (
                "seq",
                "event_id",
                "occurred_at",
                "caller",
                "caller_role",
                "action",
                "purpose",
                "outcome",
                "reason",
                "tokens",
                "subject_ids",
                "field_types",
                "reference",
                "request_id",
                "policy_version",
            )
        }
    )
    forged["hash"] = chain_hash(forged["prev_hash"], content)
    forged["signature"] = os.urandom(64)
    with env.db().begin() as conn:
        conn.execute(insert(audit_events).values(**forged))


def tamper_copy(env) -> None:
    row = next(r for r in rows(env) if r["seq"] == 2)
    with env.db().begin() as conn:
        conn.execute(insert(audit_events).values(**{k: v for k, v in row.items() if k != "id"}))


def tamper_reorder(env) -> None:
    a, b = (next(r for r in rows(env) if r["seq"] == s) for s in (7, 8))
    with env.db().begin() as conn:
        for target, source in ((a, b), (b, a)):
            conn.execute(
                update(audit_events)
                .where(audit_events.c.id == target["id"])
                .values(**{k: v for k, v in source.items() if k != "id"})
            )


def tamper_renumber(env) -> None:
    with env.db().begin() as conn:
        conn.execute(update(audit_events).where(audit_events.c.seq == 2).values(seq=-2))
        conn.execute(update(audit_events).where(audit_events.c.seq == 3).values(seq=2))
        conn.execute(update(audit_events).where(audit_events.c.seq == -2).values(seq=3))


def tamper_truncate(env) -> None:
    with env.db().begin() as conn:
        conn.execute(delete(audit_events).where(audit_events.c.seq >= 3))


SCENARIOS = {
    "modify": (tamper_modify, [("MODIFIED", 3, 3)]),
    "modify-rehash": (tamper_modify_rehash, [("MODIFIED", 4, 4)]),
    "delete": (tamper_delete, [("DELETED", 5, 6)]),
    "insert-forged": (tamper_insert, [("INSERTED", 11, 11)]),
    "insert-copy": (tamper_copy, [("INSERTED", 2, 2)]),
    "reorder": (tamper_reorder, [("REORDERED", 7, 7)]),
    "renumber": (tamper_renumber, [("REORDERED", 2, 2), ("REORDERED", 3, 3)]),
    # Events 3-10 are gone; the head record (and the signed root at 5) prove they existed.
    "truncate": (tamper_truncate, [("DELETED", 3, 10)]),
}


@pytest.mark.parametrize("scenario", list(SCENARIOS))
async def test_tampering_is_detected_and_named(vault_factory, scenario: str) -> None:
    env = await vault_factory()
    await populate(env)
    assert verify_database(env.db()).ok
    tamper, expected = SCENARIOS[scenario]
    tamper(env)
    report = verify_database(env.db())
    assert not report.ok
    if scenario == "reorder":  # either of the swapped events may be reported as the outlier
        assert len(report.findings) == 1
        assert report.findings[0].kind.value == "REORDERED" and report.findings[0].seq in (7, 8)
    else:
        assert kinds(report) == expected, report.findings


@pytest.mark.parametrize(("backend", "db"), [COMBOS[0], COMBOS[2]])
async def test_verify_over_grpc_cli_and_offline_export(
    vault_factory, tmp_path, monkeypatch, backend: str, db: str
) -> None:
    env = await vault_factory(backend, db)
    await populate(env)
    stub = env.audit_stub()
    officer = bearer(env.officer_credential)

    ok = await stub.VerifyAuditLog(audit_service_pb2.VerifyAuditLogRequest(), metadata=officer)
    assert ok.ok and ok.event_count == 10 and ok.root_count == 1
    assert ok.latest_root.sequence == 5 and ok.unrooted_event_count == 5
    root = await stub.GetSignedRoot(audit_service_pb2.GetSignedRootRequest(), metadata=officer)
    assert root.root.sequence == 11  # includes the officer's verification just made
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    Ed25519PublicKey.from_public_bytes(root.public_key).verify(
        root.root.signature, root.root.statement
    )

    tamper_modify(env)
    tamper_delete(env)
    tamper_reorder(env)
    tamper_insert(env)
    bad = await stub.VerifyAuditLog(audit_service_pb2.VerifyAuditLogRequest(), metadata=officer)
    assert not bad.ok
    found = {(audit_service_pb2.FindingKind.Name(f.kind), f.sequence) for f in bad.findings}
    assert ("FINDING_KIND_MODIFIED", 3) in found
    assert ("FINDING_KIND_DELETED", 5) in found
    assert {("FINDING_KIND_REORDERED", 7), ("FINDING_KIND_REORDERED", 8)} & found
    assert any(k == "FINDING_KIND_INSERTED" for k, _ in found)

    # The platform may not read the audit log, and the attempt is itself audited.
    with pytest.raises(grpc.aio.AioRpcError) as denied:
        await stub.ListAccessEvents(
            audit_service_pb2.ListAccessEventsRequest(), metadata=bearer(env.platform_credential)
        )
    assert "ROLE_DENIED" in str(denied.value) or denied.value.code().name == "PERMISSION_DENIED"

    # Offline: export with the CLI, verify with only the pinned public key.
    monkeypatch.setenv("HEALTHCODE_HOME", str(env.settings.home))
    if env.settings.database_url is not None:
        monkeypatch.setenv(
            "HEALTHCODE_VAULT_DATABASE_URL", env.settings.database_url.get_secret_value()
        )
    runner = CliRunner()
    pub = runner.invoke(vault_app, ["audit", "public-key"])
    assert pub.exit_code == 0, pub.output
    key_file = tmp_path / "audit.pem"
    key_file.write_text(pub.output.split("\n", 1)[1])
    export = tmp_path / "audit.jsonl"
    assert runner.invoke(vault_app, ["audit", "export", "--output", str(export)]).exit_code == 0
    offline = runner.invoke(
        vault_app,
        ["audit", "verify", "--file", str(export), "--public-key", str(key_file), "--json"],
    )
    assert offline.exit_code == 1
    result = json.loads(offline.output)
    assert {(f["kind"], f["sequence"]) for f in result["findings"]} >= {
        ("MODIFIED", 3),
        ("DELETED", 5),
    }
    online = runner.invoke(vault_app, ["audit", "verify"])
    assert online.exit_code == 1 and "MODIFIED" in online.output and "event 3" in online.output
    # A different key (an attacker re-signing everything) is rejected offline.
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    other = tmp_path / "other.pem"
    other.write_bytes(
        Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    )
    wrong = runner.invoke(
        vault_app, ["audit", "verify", "--file", str(export), "--public-key", str(other), "--json"]
    )
    assert wrong.exit_code == 1


async def test_list_access_events_filters_and_pages(vault_factory) -> None:
    env = await vault_factory()
    tokens = await populate(env)
    client = env.client()
    other = await client.tokenize([TokenizeItem(FieldType.PHONE, phone(2), "p2")])
    with pytest.raises(PermissionDenied):  # a denied call is listed too
        await client.detokenize([other[0].token], "PROVINCIAL_MUTUAL_RECOGNITION")
    stub = env.audit_stub()
    md = bearer(env.officer_credential)
    page = await stub.ListAccessEvents(
        audit_service_pb2.ListAccessEventsRequest(
            purpose=vault_pb2.PURPOSE_CORRECTION_REVIEW, page_size=2
        ),
        metadata=md,
    )
    seen = list(page.events)
    while page.next_page_token:
        page = await stub.ListAccessEvents(
            audit_service_pb2.ListAccessEventsRequest(
                purpose=vault_pb2.PURPOSE_CORRECTION_REVIEW,
                page_size=2,
                page_token=page.next_page_token,
            ),
            metadata=md,
        )
        seen.extend(page.events)
    assert len(seen) == 5
    assert all(e.action == audit_service_pb2.AUDIT_ACTION_DETOKENIZE for e in seen)
    assert [e.sequence for e in seen] == sorted(e.sequence for e in seen)
    by_token = await stub.ListAccessEvents(
        audit_service_pb2.ListAccessEventsRequest(token=other[0].token), metadata=md
    )
    assert [(e.action, e.outcome) for e in by_token.events] == [
        (audit_service_pb2.AUDIT_ACTION_TOKENIZE, audit_service_pb2.AUDIT_OUTCOME_ALLOWED),
        (audit_service_pb2.AUDIT_ACTION_DETOKENIZE, audit_service_pb2.AUDIT_OUTCOME_DENIED),
    ]
    assert by_token.events[1].reason == "POLICY_DENIED"
    by_caller = await stub.ListAccessEvents(
        audit_service_pb2.ListAccessEventsRequest(
            caller="platform-server", token=tokens[0], page_size=1000
        ),
        metadata=md,
    )
    assert len(by_caller.events) == 10
    future = Timestamp(seconds=4_000_000_000)
    assert not (
        await stub.ListAccessEvents(
            audit_service_pb2.ListAccessEventsRequest(start_time=future), metadata=md
        )
    ).events
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await stub.ListAccessEvents(
            audit_service_pb2.ListAccessEventsRequest(page_token="not-a-token"), metadata=md
        )
    assert bad.value.code().name == "INVALID_ARGUMENT"
    # The event's own canonical content lets anyone recompute its hash.
    event = by_token.events[0]
    assert chain_hash(event.prev_hash, event.canonical_content) == event.hash

    chunks = [
        c async for c in stub.ExportAuditLog(audit_service_pb2.ExportAuditLogRequest(), metadata=md)
    ]
    assert chunks[0].public_key and chunks[-1].roots
    assert sum(len(c.events) for c in chunks) >= 12


@pytest.mark.parametrize(("backend", "db"), [COMBOS[0], COMBOS[2]])
async def test_concurrent_calls_share_one_valid_chain(vault_factory, backend: str, db: str) -> None:
    import asyncio

    env = await vault_factory(backend, db)
    tokens = await populate(env, n=2)
    clients = [env.client() for _ in range(4)]
    await asyncio.gather(
        *(
            c.detokenize(tokens, "CORRECTION_REVIEW", reference=f"R-{i}-{j}")
            for j in range(10)
            for i, c in enumerate(clients)
        )
    )
    report = verify_database(env.db())
    assert report.ok, report.findings
    assert report.event_count == 2 + 40
    refs = {r["reference"] for r in rows(env) if r["action"] == "DETOKENIZE"}
    assert {f"R-{i}-{j}" for i in range(4) for j in range(10)} <= refs
