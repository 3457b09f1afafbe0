"""Health and travel declarations, status, own passages and corrections over real gRPC, on SQLite
and PostgreSQL."""

from __future__ import annotations

import datetime as dt

import grpc
from google.protobuf.timestamp_pb2 import Timestamp
from healthcode_sdk._gen.healthcode.v1 import common_pb2
from healthcode_sdk._gen.healthcode.v1 import resident_service_pb2 as pb
from sqlalchemy import select
from sqlalchemy.orm import Session

from healthcode.common.errors import field_violations
from healthcode.server.db.models import Checkpoint, IdempotencyRecord, Passage
from healthcode.server.residents.models import Correction, HealthDeclaration, TravelDeclaration
from healthcode.server.status.models import RiskArea, StatusChange
from tests.server.auth.stack import Stack
from tests.server.residents.helpers import expect, registered, rid


def _ts(moment: dt.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(moment)
    return ts


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


async def test_fever_turns_yellow_and_retry_is_idempotent(stack: Stack) -> None:
    meta, _person, subject = await registered(stack)
    request = pb.SubmitHealthDeclarationRequest(
        request_id=rid(),
        temperature_celsius=38.2,
        symptoms=[pb.SYMPTOM_COUGH, pb.SYMPTOM_COUGH, pb.SYMPTOM_FATIGUE],
    )
    reply = await stack.residents.SubmitHealthDeclaration(request, metadata=meta)
    assert reply.status.subject_id == subject
    assert reply.status.color == common_pb2.CODE_COLOR_YELLOW
    assert {r.rule for r in reply.status.reasons} >= {"FEVER"}
    again = await stack.residents.SubmitHealthDeclaration(request, metadata=meta)
    assert again.declaration_id == reply.declaration_id
    rows = await stack.db.run(lambda s: list(s.scalars(select(HealthDeclaration))))
    assert len(rows) == 1
    assert rows[0].symptoms == ["SYMPTOM_COUGH", "SYMPTOM_FATIGUE"]
    # A normal declaration brings the person back to green.
    normal = await stack.residents.SubmitHealthDeclaration(
        pb.SubmitHealthDeclarationRequest(request_id=rid(), temperature_celsius=36.6),
        metadata=meta,
    )
    assert normal.status.color == common_pb2.CODE_COLOR_GREEN
    status = await stack.residents.GetHealthStatus(pb.GetHealthStatusRequest(), metadata=meta)
    assert status.status.color == common_pb2.CODE_COLOR_GREEN


async def test_health_declaration_validation_writes_nothing(stack: Stack) -> None:
    meta, _person, _subject = await registered(stack)
    cases = [
        (pb.SubmitHealthDeclarationRequest(temperature_celsius=50.0), ["temperature_celsius"]),
        (pb.SubmitHealthDeclarationRequest(temperature_celsius=0.0), ["temperature_celsius"]),
        (
            pb.SubmitHealthDeclarationRequest(temperature_celsius=float("nan")),
            ["temperature_celsius"],
        ),
        (
            pb.SubmitHealthDeclarationRequest(
                temperature_celsius=36.5, symptoms=[pb.SYMPTOM_UNSPECIFIED]
            ),
            ["symptoms"],
        ),
        (
            pb.SubmitHealthDeclarationRequest(temperature_celsius=36.5, symptoms=[99]),
            ["symptoms"],
        ),
    ]
    for request, fields in cases:
        request.request_id = rid()
        err = await expect(
            stack.residents.SubmitHealthDeclaration(request, metadata=meta),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert field_violations(err) == fields
    assert await stack.count(HealthDeclaration) == 0
    assert await stack.count(IdempotencyRecord) == 1  # the registration's only


async def test_travel_from_risk_area_turns_yellow(stack: Stack) -> None:
    meta, _person, _subject = await registered(stack)

    def risk(s: Session) -> None:
        s.add(RiskArea(division_code="310101", legal_basis="测试依据", added_by="test"))

    await stack.db.run(risk)
    request = pb.SubmitTravelDeclarationRequest(
        request_id=rid(),
        visited_division_codes=["310101", "510402", "310101"],
        arrive_time=_ts(_now() - dt.timedelta(days=2)),
    )
    reply = await stack.residents.SubmitTravelDeclaration(request, metadata=meta)
    assert reply.status.color == common_pb2.CODE_COLOR_YELLOW
    assert "RISK_AREA_TRAVEL" in {r.rule for r in reply.status.reasons}
    again = await stack.residents.SubmitTravelDeclaration(request, metadata=meta)
    assert again.declaration_id == reply.declaration_id
    rows = await stack.db.run(lambda s: list(s.scalars(select(TravelDeclaration))))
    assert len(rows) == 1 and rows[0].visited_division_codes == ["310101", "510402"]


async def test_travel_declaration_validation(stack: Stack) -> None:
    meta, _person, _subject = await registered(stack)
    now = _now()
    cases = [
        (pb.SubmitTravelDeclarationRequest(arrive_time=_ts(now)), ["visited_division_codes"]),
        (
            pb.SubmitTravelDeclarationRequest(
                visited_division_codes=["510402", "51X402"], arrive_time=_ts(now)
            ),
            ["visited_division_codes[1]"],
        ),
        (
            pb.SubmitTravelDeclarationRequest(
                visited_division_codes=["510402"] * 51, arrive_time=_ts(now)
            ),
            ["visited_division_codes"],
        ),
        (pb.SubmitTravelDeclarationRequest(visited_division_codes=["510402"]), ["arrive_time"]),
        (
            pb.SubmitTravelDeclarationRequest(
                visited_division_codes=["510402"], arrive_time=_ts(now + dt.timedelta(hours=1))
            ),
            ["arrive_time"],
        ),
        (
            pb.SubmitTravelDeclarationRequest(
                visited_division_codes=["510402"], arrive_time=_ts(now - dt.timedelta(days=31))
            ),
            ["arrive_time"],
        ),
    ]
    for request, fields in cases:
        request.request_id = rid()
        err = await expect(
            stack.residents.SubmitTravelDeclaration(request, metadata=meta),
            grpc.StatusCode.INVALID_ARGUMENT,
            "INVALID_ARGUMENT",
        )
        assert field_violations(err) == fields
    assert await stack.count(TravelDeclaration) == 0


async def test_list_my_passages_pages_newest_first(stack: Stack) -> None:
    meta, person, subject = await registered(stack)
    base = _now().replace(microsecond=0) - dt.timedelta(hours=5)

    def seed(s: Session) -> None:
        cp = Checkpoint(name="炳草岗东门", division_code="510402")
        s.add(cp)
        s.flush()
        for i in range(5):
            s.add(
                Passage(
                    checkpoint_id=cp.id,
                    person_id=subject,
                    division_code="510402",
                    color=1,
                    direction=1,
                    method=1,
                    decision=1,
                    temperature=36.5,
                    # two passages share a time: the id breaks the tie
                    occurred_at=base + dt.timedelta(hours=min(i, 3)),
                    source_id="test",
                    scan_id=f"scan-{i}",
                )
            )

    await stack.db.run(seed)
    seen: list[common_pb2.Passage] = []
    token = ""
    pages = 0
    while True:
        page = await stack.residents.ListMyPassages(
            pb.ListMyPassagesRequest(page_size=2, page_token=token), metadata=meta
        )
        seen.extend(page.passages)
        pages += 1
        token = page.next_page_token
        if not token:
            break
    assert pages == 3
    assert len({p.passage_id for p in seen}) == 5
    times = [p.occurred_at.ToDatetime() for p in seen]
    assert times == sorted(times, reverse=True)
    assert seen[0].checkpoint_name == "炳草岗东门"
    assert seen[0].identity.masked_id_number.endswith(person.id_number[-2:])
    assert person.name not in seen[0].identity.masked_name
    err = await expect(
        stack.residents.ListMyPassages(
            pb.ListMyPassagesRequest(page_token="forged"), metadata=meta
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert field_violations(err) == ["page_token"]
    # Someone else's page token does not work for me.
    other, _p, _s = await registered(stack)
    first = await stack.residents.ListMyPassages(
        pb.ListMyPassagesRequest(page_size=1), metadata=meta
    )
    await expect(
        stack.residents.ListMyPassages(
            pb.ListMyPassagesRequest(page_token=first.next_page_token), metadata=other
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )


async def test_file_correction_against_approved_decision(stack: Stack) -> None:
    meta, _person, subject = await registered(stack)
    session_info = await stack.residents.GetProfile(pb.GetProfileRequest(), metadata=meta)
    assert session_info.profile.subject_id == subject

    def decisions(s: Session) -> tuple[str, str]:
        from healthcode.server.db.models import Account

        account = s.scalars(select(Account).where(Account.person_id == subject)).one()
        approved = StatusChange(
            person_id=subject,
            color=3,
            legal_basis="测试依据",
            state="APPROVED",
            proposed_by=account.id,
            proposed_by_label="甲 (health_authority)",
            reviewed_by=account.id,
            reviewed_by_label="乙 (health_authority)",
            reviewed_at=_now(),
        )
        pending = StatusChange(
            person_id=subject,
            color=3,
            legal_basis="测试依据",
            state="PENDING",
            proposed_by=account.id,
            proposed_by_label="甲 (health_authority)",
        )
        s.add_all([approved, pending])
        s.flush()
        return approved.id, pending.id

    approved_id, pending_id = await stack.db.run(decisions)
    err = await expect(
        stack.residents.FileCorrection(
            pb.FileCorrectionRequest(request_id=rid(), reason="  "), metadata=meta
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert field_violations(err) == ["reason"]
    for change_id in (pending_id, "f" * 32):
        await expect(
            stack.residents.FileCorrection(
                pb.FileCorrectionRequest(request_id=rid(), change_id=change_id, reason="不是我"),
                metadata=meta,
            ),
            grpc.StatusCode.NOT_FOUND,
            "CHANGE_NOT_FOUND",
        )
    assert await stack.count(Correction) == 0
    request = pb.FileCorrectionRequest(request_id=rid(), change_id=approved_id, reason="我未去过")
    filed = await stack.residents.FileCorrection(request, metadata=meta)
    assert filed.correction.state == pb.CORRECTION_STATE_PENDING
    assert filed.correction.change_id == approved_id
    assert filed.correction.subject_id == subject
    assert (await stack.residents.FileCorrection(request, metadata=meta)) == filed
    second = await stack.residents.FileCorrection(
        pb.FileCorrectionRequest(request_id=rid(), reason="体温测量有误"), metadata=meta
    )
    listed = await stack.residents.ListMyCorrections(
        pb.ListMyCorrectionsRequest(page_size=1), metadata=meta
    )
    assert len(listed.corrections) == 1 and listed.next_page_token
    rest = await stack.residents.ListMyCorrections(
        pb.ListMyCorrectionsRequest(page_size=1, page_token=listed.next_page_token),
        metadata=meta,
    )
    ids = {listed.corrections[0].correction_id, rest.corrections[0].correction_id}
    assert ids == {filed.correction.correction_id, second.correction.correction_id}
    assert not rest.next_page_token
    # Another resident cannot appeal this person's decision.
    other, _p, _s = await registered(stack)
    await expect(
        stack.residents.FileCorrection(
            pb.FileCorrectionRequest(
                request_id=rid(), subject_id=subject, change_id=approved_id, reason="x"
            ),
            metadata=other,
        ),
        grpc.StatusCode.NOT_FOUND,
        "SUBJECT_NOT_FOUND",
    )
