"""The whole life of a code over real gRPC sockets, on SQLite and PostgreSQL (issue 2's scenario).

A resident logs in with an SMS code, registers, declares, and gets a green code; staff verifies
it at a checkpoint and a passage is recorded; the resident lists it; one official proposes red
with a legal basis, a second approves; the same code now verifies red online; the resident sees
who changed it and why.
"""

from __future__ import annotations

import time

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from healthcode_sdk._gen.healthcode.v1 import (
    admin_service_pb2,
    code_service_pb2,
    common_pb2,
    resident_service_pb2,
    verification_service_pb2,
)

from healthcode.common.errors import error_info
from healthcode.server.common.principal import Role
from tests.fixtures.platform import Stack

GREEN, RED = common_pb2.CODE_COLOR_GREEN, common_pb2.CODE_COLOR_RED
LEGAL_BASIS = "《中华人民共和国传染病防治法》第三十九条；攀枝花市疫情防控指挥部2022年第12号通告"


def test_code_lifecycle_from_login_to_official_red(platform_stack: Stack) -> None:
    stack = platform_stack
    # Resident: SMS login (inside stack.resident), profile, declarations, green code.
    resident, _person, subject_id = stack.resident()
    status = resident.residents.SubmitHealthDeclaration(
        resident_service_pb2.SubmitHealthDeclarationRequest(
            request_id="decl-1", temperature_celsius=36.5
        )
    ).status
    assert status.color == GREEN
    status = resident.residents.SubmitTravelDeclaration(
        resident_service_pb2.SubmitTravelDeclarationRequest(
            request_id="travel-1",
            visited_division_codes=["510402"],
            arrive_time=Timestamp(seconds=int(time.time()) - 86400),
        )
    ).status
    assert status.color == GREEN
    issued = resident.codes.IssueCode(code_service_pb2.IssueCodeRequest()).code
    assert issued.code.startswith("JKM1:")
    assert issued.color == GREEN
    assert issued.kind == common_pb2.CODE_KIND_DYNAMIC
    assert issued.qr_png.startswith(b"\x89PNG") and "<svg" in issued.qr_svg

    # Staff at a checkpoint verifies it: green, allowed, a passage recorded.
    checkpoint_id = stack.checkpoint("510402", "炳草岗测试卡口")
    staff, _ = stack.official(Role.STAFF, division="510402", checkpoint_id=checkpoint_id)
    verified = staff.verification.VerifyCode(
        verification_service_pb2.VerifyCodeRequest(
            code=issued.code,
            request_id="scan-1",
            direction=common_pb2.PASSAGE_DIRECTION_ENTRY,
            temperature_celsius=36.4,
        )
    )
    assert verified.color == GREEN
    assert verified.signed_color == GREEN
    assert verified.decision == common_pb2.PASSAGE_DECISION_ALLOW
    assert verified.passage_id
    assert "*" in verified.identity.masked_name and "*" in verified.identity.masked_id_number

    # The resident sees the passage in their own records.
    passages = resident.residents.ListMyPassages(
        resident_service_pb2.ListMyPassagesRequest()
    ).passages
    assert [p.passage_id for p in passages] == [verified.passage_id]
    assert passages[0].checkpoint_id == checkpoint_id
    assert passages[0].color == GREEN

    # One official proposes red; alone, that changes nothing.
    first, _ = stack.official(Role.HEALTH_AUTHORITY, name="市卫健委 测试官员甲")
    second, _ = stack.official(Role.HEALTH_AUTHORITY, name="市卫健委 测试官员乙")
    change = first.admin.ProposeStatusChange(
        admin_service_pb2.ProposeStatusChangeRequest(
            request_id="change-1",
            subject_id=subject_id,
            color=RED,
            legal_basis=LEGAL_BASIS,
            duration_days=14,
        )
    ).change
    assert change.state == admin_service_pb2.STATUS_CHANGE_STATE_PENDING
    still = staff.verification.VerifyCode(
        verification_service_pb2.VerifyCodeRequest(code=issued.code, request_id="scan-2")
    )
    assert still.color == GREEN

    # The proposer cannot approve their own proposal.
    with pytest.raises(grpc.RpcError) as own:
        first.admin.ReviewStatusChange(
            admin_service_pb2.ReviewStatusChangeRequest(change_id=change.change_id, approve=True)
        )
    assert own.value.code() == grpc.StatusCode.PERMISSION_DENIED
    info = error_info(own.value)
    assert info is not None and info.reason == "SECOND_APPROVER_REQUIRED"

    # A second official approves: the same code now verifies red online and is denied.
    approved = second.admin.ReviewStatusChange(
        admin_service_pb2.ReviewStatusChangeRequest(
            change_id=change.change_id, approve=True, comment="核实无误"
        )
    ).change
    assert approved.state == admin_service_pb2.STATUS_CHANGE_STATE_APPROVED
    red = staff.verification.VerifyCode(
        verification_service_pb2.VerifyCodeRequest(code=issued.code, request_id="scan-3")
    )
    assert red.color == RED
    assert red.signed_color == GREEN
    assert red.decision == common_pb2.PASSAGE_DECISION_DENY

    # The resident sees who changed it and why.
    status = resident.residents.GetHealthStatus(
        resident_service_pb2.GetHealthStatusRequest()
    ).status
    assert status.color == RED
    assert len(status.decisions) == 1
    decision = status.decisions[0]
    assert decision.color == RED
    assert decision.legal_basis == LEGAL_BASIS
    assert "测试官员甲" in decision.proposed_by
    assert "测试官员乙" in decision.approved_by
    assert any(r.rule == "OFFICIAL_DECISION" for r in status.reasons)

    # ... and can appeal it.
    correction = resident.residents.FileCorrection(
        resident_service_pb2.FileCorrectionRequest(
            request_id="appeal-1", change_id=change.change_id, reason="我从未去过相关场所，申请复核"
        )
    ).correction
    assert correction.state == resident_service_pb2.CORRECTION_STATE_PENDING

    # The verification is a retry-safe write: retrying scan-3 records no second passage.
    again = staff.verification.VerifyCode(
        verification_service_pb2.VerifyCodeRequest(code=issued.code, request_id="scan-3")
    )
    assert again.passage_id == red.passage_id
    passages = resident.residents.ListMyPassages(
        resident_service_pb2.ListMyPassagesRequest()
    ).passages
    assert len(passages) == 3
