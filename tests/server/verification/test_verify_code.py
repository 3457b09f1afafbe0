"""VerifyCode and BatchVerifyCodes over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
import time
import zlib
from typing import Any

import cbor2
import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from healthcode_sdk._gen.healthcode.v1 import code_service_pb2 as code_pb
from healthcode_sdk._gen.healthcode.v1 import common_pb2
from healthcode_sdk._gen.healthcode.v1 import verification_service_pb2 as ver_pb
from sqlalchemy import update
from sqlalchemy.orm import Session

from healthcode.codes import CodeKind, Colour, HealthCodeClaims, IssuerKey, decode_code, encode_code
from healthcode.codes.cose import der_to_raw, sig_structure
from healthcode.codes.envelope import b45encode
from healthcode.common.errors import error_info, field_violations
from healthcode.server.codes.keystore import revoke_person_offline_codes
from healthcode.server.codes.models import IssuerKeyRecord
from healthcode.server.db.base import utcnow
from healthcode.server.db.models import AuditEvent, Passage
from tests.server.codes.harness import Caller, GateStack


async def issue(stack: GateStack, resident: Caller) -> str:
    response = await stack.codes.IssueCode(code_pb.IssueCodeRequest(), metadata=resident.md)
    return response.code.code


def crafted(
    key: IssuerKey,
    *,
    alg: int = -7,
    iat: int | None = None,
    exp: int | None = None,
    signature: bytes | None = None,
) -> str:
    """A COSE_Sign1 code signed by ``key`` with chosen alg and times."""
    now = int(time.time())
    iat = now if iat is None else iat
    claims = {
        1: key.issuer,
        6: iat,
        4: iat + 300 if exp is None else exp,
        7: os.urandom(16),
        -70001: 1,
        -70002: 1,
        -70003: "张*",
        -70004: "5***************12",
    }
    protected = cbor2.dumps({1: alg, 4: key.kid})
    body = cbor2.dumps(claims)
    if signature is None:
        der = key.private_key.sign(sig_structure(protected, body), ec.ECDSA(hashes.SHA256()))
        signature = der_to_raw(der)
    message = cbor2.dumps(cbor2.CBORTag(18, [protected, {}, body, signature]))
    return "JKM1:" + b45encode(zlib.compress(message))


async def reason_of(stack: GateStack, md: Any, code: str) -> tuple[grpc.StatusCode, str, list[str]]:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.verification.VerifyCode(
            ver_pb.VerifyCodeRequest(code=code, request_id=f"r{os.urandom(4).hex()}"), metadata=md
        )
    info = error_info(err.value)
    assert info is not None
    return err.value.code(), info.reason, field_violations(err.value)


async def test_every_rejection_class_has_its_own_reason(stack: GateStack) -> None:
    checkpoint = await stack.checkpoint()
    staff = await stack.staff(checkpoint)
    snapshot = await stack.platform.keys.snapshot()
    key = snapshot.issuer.key

    # Let the key's window start an hour ago, so an expired code is still inside it.
    def backdate(session: Session) -> None:
        session.execute(update(IssuerKeyRecord).values(not_before=utcnow() - dt.timedelta(hours=1)))

    await stack.db.run(backdate)
    snapshot = await stack.platform.keys.reload()
    key = snapshot.issuer.key
    now = int(time.time())
    foreign = IssuerKey.generate(key.issuer, not_before=0, not_after=2**40)

    # A revoked printed code.
    resident = await stack.resident()
    offline = await stack.codes.IssueOfflineCode(
        code_pb.IssueOfflineCodeRequest(request_id="off-1", validity_days=2), metadata=resident.md
    )
    assert resident.person_id is not None
    count, version = await stack.db.run(revoke_person_offline_codes, resident.person_id, utcnow())
    assert (count, version) == (1, 1)

    cases = {
        "CODE_BAD_PREFIX": "HC1:ABC",
        "CODE_BAD_BASE45": "JKM1:abc",
        "CODE_BAD_ZLIB": "JKM1:" + b45encode(b"not a zlib stream"),
        "CODE_BAD_COSE": "JKM1:" + b45encode(zlib.compress(b"\x01\x02garbage")),
        "CODE_UNSUPPORTED_ALG": crafted(key, alg=-35),
        "CODE_UNKNOWN_KID": crafted(foreign),
        "CODE_BAD_SIGNATURE": crafted(key, signature=os.urandom(64)),
        "CODE_EXPIRED": crafted(key, iat=now - 1200, exp=now - 900),
        "CODE_NOT_YET_VALID": crafted(key, iat=now + 900, exp=now + 1200),
        "CODE_REVOKED": offline.code.code,
    }
    for expected, code in cases.items():
        status, reason, fields = await reason_of(stack, staff.md, code)
        assert (status, reason, fields) == (grpc.StatusCode.INVALID_ARGUMENT, expected, ["code"])
    # A well-formed crafted code passes (the cases differ from it in one thing only) but is
    # unknown to the platform (no issued-code row).
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.verification.VerifyCode(
            ver_pb.VerifyCodeRequest(code=crafted(key)), metadata=staff.md
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert await stack.count(Passage) == 0
    # Empty code, bad enum, bad temperature: field violations, nothing written.
    for request, field in (
        (ver_pb.VerifyCodeRequest(), "code"),
        (ver_pb.VerifyCodeRequest(code=cases["CODE_EXPIRED"], direction=9), "direction"),
        (
            ver_pb.VerifyCodeRequest(code="JKM1:", temperature_celsius=float("nan")),
            "temperature_celsius",
        ),
        (ver_pb.VerifyCodeRequest(code="JKM1:", request_id="bad id!"), "request_id"),
    ):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stack.verification.VerifyCode(request, metadata=staff.md)
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == [field]


async def test_current_colour_dedup_and_decisions(stack: GateStack) -> None:
    resident = await stack.resident()
    assert resident.person_id is not None
    code = await issue(stack, resident)
    checkpoint = await stack.checkpoint()
    staff = await stack.staff(checkpoint)
    first = await stack.verification.VerifyCode(
        ver_pb.VerifyCodeRequest(code=code, request_id="scan-a"), metadata=staff.md
    )
    assert first.decision == common_pb2.PASSAGE_DECISION_ALLOW
    retry = await stack.verification.VerifyCode(
        ver_pb.VerifyCodeRequest(code=code, request_id="scan-a"), metadata=staff.md
    )
    assert retry.passage_id == first.passage_id
    assert await stack.count(Passage) == 1
    # Fever -> DENY, even for green.
    fever = await stack.verification.VerifyCode(
        ver_pb.VerifyCodeRequest(code=code, request_id="scan-b", temperature_celsius=38.2),
        metadata=staff.md,
    )
    assert (fever.color, fever.decision) == (
        common_pb2.CODE_COLOR_GREEN,
        common_pb2.PASSAGE_DECISION_DENY,
    )
    # The status changes: the same code now verifies red (signed colour stays green).
    await stack.set_color(resident.person_id, 3)
    red = await stack.verification.VerifyCode(
        ver_pb.VerifyCodeRequest(code=code, request_id="scan-c"), metadata=staff.md
    )
    assert (red.color, red.signed_color, red.decision) == (
        common_pb2.CODE_COLOR_RED,
        common_pb2.CODE_COLOR_GREEN,
        common_pb2.PASSAGE_DECISION_DENY,
    )
    await stack.set_color(resident.person_id, 2)
    yellow = await stack.verification.VerifyCode(
        ver_pb.VerifyCodeRequest(code=code, request_id="scan-d"), metadata=staff.md
    )
    assert (yellow.color, yellow.decision) == (
        common_pb2.CODE_COLOR_YELLOW,
        common_pb2.PASSAGE_DECISION_DENY,
    )
    assert await stack.count(Passage) == 4
    # A partner verifies without recording anything.
    partner = await stack.account("partner")
    seen = await stack.verification.VerifyCode(
        ver_pb.VerifyCodeRequest(code=code, request_id="p-1"), metadata=partner.md
    )
    assert seen.color == common_pb2.CODE_COLOR_YELLOW
    assert seen.passage_id == ""
    assert await stack.count(Passage) == 4
    # A device records at its checkpoint too.
    device = await stack.device(checkpoint)
    at_device = await stack.verification.VerifyCode(
        ver_pb.VerifyCodeRequest(code=code), metadata=device.md
    )
    assert at_device.passage_id
    assert await stack.count(Passage, Passage.source_id == device.id) == 1


async def test_concurrent_scans_group_commit_and_dedup(stack: GateStack) -> None:
    """Concurrent VerifyCode calls share transactions (group commit): every distinct scan records
    exactly one passage, and concurrent retries of one scan (same request id, possibly in the same
    batch) all get the one passage that was written."""
    resident = await stack.resident()
    assert resident.person_id is not None
    code = await issue(stack, resident)
    checkpoint = await stack.checkpoint()
    staff = await stack.staff(checkpoint)

    def scan(request_id: str) -> Any:
        return stack.verification.VerifyCode(
            ver_pb.VerifyCodeRequest(code=code, request_id=request_id), metadata=staff.md
        )

    retries = await asyncio.gather(*(scan("same-scan") for _ in range(12)))
    assert len({r.passage_id for r in retries}) == 1
    assert {r.decision for r in retries} == {common_pb2.PASSAGE_DECISION_ALLOW}
    assert await stack.count(Passage) == 1
    distinct = await asyncio.gather(*(scan(f"scan-{n}") for n in range(40)))
    assert len({r.passage_id for r in distinct}) == 40
    assert await stack.count(Passage) == 41
    # The status changes between two bursts: the next burst reads it fresh.
    await stack.set_color(resident.person_id, 3)
    red = await asyncio.gather(*(scan(f"red-{n}") for n in range(10)))
    assert {(r.color, r.decision) for r in red} == {
        (common_pb2.CODE_COLOR_RED, common_pb2.PASSAGE_DECISION_DENY)
    }
    assert await stack.count(Passage) == 51


async def test_batch_verify(stack: GateStack) -> None:
    resident = await stack.resident()
    good = await issue(stack, resident)
    provincial = await stack.account("provincial")
    response = await stack.verification.BatchVerifyCodes(
        ver_pb.BatchVerifyCodesRequest(codes=[good, "nonsense", good, ""]), metadata=provincial.md
    )
    results = list(response.results)
    assert [r.index for r in results] == [0, 1, 2, 3]
    assert [r.valid for r in results] == [True, False, True, False]
    assert [r.reason for r in results] == ["", "CODE_BAD_PREFIX", "", "CODE_BAD_PREFIX"]
    assert results[0].color == common_pb2.CODE_COLOR_GREEN
    assert results[0].kind == common_pb2.CODE_KIND_DYNAMIC
    assert results[0].identity.masked_name
    assert await stack.count(Passage) == 0
    for codes in ([], ["x"] * 501):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stack.verification.BatchVerifyCodes(
                ver_pb.BatchVerifyCodesRequest(codes=codes), metadata=provincial.md
            )
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == ["codes"]
    many = await stack.verification.BatchVerifyCodes(
        ver_pb.BatchVerifyCodesRequest(codes=[good] * 200), metadata=provincial.md
    )
    assert all(r.valid for r in many.results)


async def test_query_status_by_identity_is_audited(stack: GateStack) -> None:
    person_id, record = await stack.person()
    await stack.set_color(person_id, 3)
    provincial = await stack.account("provincial")
    found = await stack.verification.QueryStatusByIdentity(
        ver_pb.QueryStatusByIdentityRequest(id_number=record.id_number, purpose="互认核验"),
        metadata=provincial.md,
    )
    assert found.found
    assert found.color == common_pb2.CODE_COLOR_RED
    from tests.fixtures import people

    unknown = await stack.verification.QueryStatusByIdentity(
        ver_pb.QueryStatusByIdentityRequest(id_number=people.id_number(), purpose="互认核验"),
        metadata=provincial.md,
    )
    assert not unknown.found
    assert unknown.color == common_pb2.CODE_COLOR_UNSPECIFIED
    assert await stack.count(AuditEvent, AuditEvent.action == "QUERY_STATUS_BY_IDENTITY") == 2
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.verification.QueryStatusByIdentity(
            ver_pb.QueryStatusByIdentityRequest(id_number="510402199001011230", purpose=""),
            metadata=provincial.md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(err.value)) == ["id_number", "purpose"]
    assert await stack.count(AuditEvent) == 2


async def test_offline_code_rules(stack: GateStack) -> None:
    checkpoint = await stack.checkpoint("510402")
    staff = await stack.staff(checkpoint, "510402")
    here, _ = await stack.person("510402", managed=True)
    elsewhere, _ = await stack.person("510403", managed=True)
    response = await stack.codes.IssueOfflineCode(
        code_pb.IssueOfflineCodeRequest(request_id="o-1", subject_id=here, validity_days=3),
        metadata=staff.md,
    )
    claims = decode_code(response.code.code).claims
    assert claims.kind == CodeKind.PRINTED
    assert claims.expires_at - claims.issued_at == 3 * 86400
    again = await stack.codes.IssueOfflineCode(
        code_pb.IssueOfflineCodeRequest(request_id="o-1", subject_id=here, validity_days=3),
        metadata=staff.md,
    )
    assert again.code.code == response.code.code
    assert again.code.qr_png == response.code.qr_png
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.codes.IssueOfflineCode(
            code_pb.IssueOfflineCodeRequest(request_id="o-2", subject_id=elsewhere),
            metadata=staff.md,
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    for days in (8, -1):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stack.codes.IssueOfflineCode(
                code_pb.IssueOfflineCodeRequest(subject_id=here, validity_days=days),
                metadata=staff.md,
            )
        assert field_violations(err.value) == ["validity_days"]
    verified = await stack.verification.VerifyCode(
        ver_pb.VerifyCodeRequest(code=response.code.code), metadata=staff.md
    )
    assert verified.id_card_required
    assert verified.kind == common_pb2.CODE_KIND_PRINTED


def test_claims_helper_sanity() -> None:
    key = IssuerKey.generate("CN-510400", not_before=0, not_after=2**40)
    now = int(time.time())
    code = encode_code(
        key,
        HealthCodeClaims(
            "CN-510400", now, now + 5, os.urandom(16), Colour.GREEN, CodeKind.DYNAMIC, "张*", "5**2"
        ),
    )
    assert decode_code(code).claims.issued_at == now


async def test_concurrent_retries_of_an_offline_code_get_one_answer(stack: GateStack) -> None:
    checkpoint = await stack.checkpoint("510402")
    staff = await stack.staff(checkpoint, "510402")
    here, _ = await stack.person("510402", managed=True)
    request = code_pb.IssueOfflineCodeRequest(request_id="o-race", subject_id=here)
    replies = await asyncio.gather(
        *(stack.codes.IssueOfflineCode(request, metadata=staff.md) for _ in range(4))
    )
    assert len({r.code.code for r in replies}) == 1
