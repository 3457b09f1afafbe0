"""Issue -> verify -> passage over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import grpc
import pytest
from healthcode_sdk._gen.healthcode.v1 import code_service_pb2 as code_pb
from healthcode_sdk._gen.healthcode.v1 import common_pb2
from healthcode_sdk._gen.healthcode.v1 import verification_service_pb2 as ver_pb

from healthcode.codes import decode_code
from healthcode.common.errors import error_info, field_violations
from healthcode.server.db.models import Passage
from tests.server.codes.harness import GateStack


async def test_issue_verify_records_passage(stack: GateStack) -> None:
    resident = await stack.resident()
    issued = (await stack.codes.IssueCode(code_pb.IssueCodeRequest(), metadata=resident.md)).code
    assert issued.code.startswith("JKM1:")
    assert issued.color == common_pb2.CODE_COLOR_GREEN
    assert issued.kind == common_pb2.CODE_KIND_DYNAMIC
    assert issued.qr_png.startswith(b"\x89PNG")
    assert "<svg" in issued.qr_svg
    decoded = decode_code(issued.code)
    assert decoded.kid.hex() == issued.kid
    assert "*" in decoded.claims.masked_id

    checkpoint = await stack.checkpoint()
    staff = await stack.staff(checkpoint)
    response = await stack.verification.VerifyCode(
        ver_pb.VerifyCodeRequest(code=issued.code, request_id="scan-1", temperature_celsius=36.5),
        metadata=staff.md,
    )
    assert response.color == common_pb2.CODE_COLOR_GREEN
    assert response.decision == common_pb2.PASSAGE_DECISION_ALLOW
    assert response.passage_id
    assert response.identity.masked_id_number == decoded.claims.masked_id
    assert await stack.count(Passage, Passage.id == response.passage_id) == 1


async def test_issue_needs_profile_and_rejects_foreign_subject(stack: GateStack) -> None:
    resident = await stack.resident()
    other = await stack.resident()
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.codes.IssueCode(
            code_pb.IssueCodeRequest(subject_id=other.person_id or ""), metadata=resident.md
        )
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.codes.IssueCode(
            code_pb.IssueCodeRequest(subject_id="x" * 65), metadata=resident.md
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field_violations(err.value) == ["subject_id"]
    info = error_info(err.value)
    assert info is not None
