"""CheckpointService over real gRPC, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import Any

import grpc
import pytest
from google.protobuf.timestamp_pb2 import Timestamp
from healthcode_sdk._gen.healthcode.v1 import checkpoint_service_pb2 as pb
from healthcode_sdk._gen.healthcode.v1 import code_service_pb2 as code_pb
from healthcode_sdk._gen.healthcode.v1 import common_pb2
from healthcode_sdk._gen.healthcode.v1 import resident_service_pb2 as res_pb

from healthcode.common.errors import field_violations
from healthcode.server.db.models import IdempotencyRecord, Passage, Person
from tests.fixtures import people
from tests.server.codes.harness import Caller, GateStack


def ts(value: dt.datetime | None = None) -> Timestamp:
    stamp = Timestamp()
    stamp.FromDatetime(value or dt.datetime.now(dt.UTC))
    return stamp


def code_scan(scan_id: str, code: str, **kwargs: Any) -> pb.Scan:
    return pb.Scan(scan_id=scan_id, scan_time=ts(), code=code, **kwargs)


async def stream(
    stack: GateStack, md: Any, *requests: pb.StreamScansRequest
) -> list[pb.StreamScansResponse]:
    async def gen() -> AsyncIterator[pb.StreamScansRequest]:
        for request in requests:
            yield request

    call = stack.checkpoints.StreamScans(gen(), metadata=md)
    return [response async for response in call]


async def new_code(stack: GateStack) -> tuple[Caller, str]:
    resident = await stack.resident()
    issued = await stack.codes.IssueCode(code_pb.IssueCodeRequest(), metadata=resident.md)
    return resident, issued.code.code


async def test_stream_scans_ack_dedup_and_rejections(stack: GateStack) -> None:
    checkpoint = await stack.checkpoint()
    device = await stack.device(checkpoint)
    _, code = await new_code(stack)
    card = people.person()
    future = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    first = pb.StreamScansRequest(
        scans=[
            code_scan("s-1", code, temperature_celsius=36.4),
            pb.Scan(
                scan_id="s-2",
                scan_time=ts(),
                id_card=pb.IdCardData(
                    name=card.name, id_number=card.id_number, address=card.address
                ),
                method=common_pb2.PASSAGE_METHOD_ID_PCSC,
            ),
            code_scan("s-3", "JKM1:garbage"),
            pb.Scan(scan_id="s-4", scan_time=ts(future), code=code),
            pb.Scan(scan_id="s-5", code=code),
            pb.Scan(scan_id="s-6", scan_time=ts()),
            pb.Scan(scan_id="", scan_time=ts(), code=code),
            pb.Scan(
                scan_id="s-8",
                scan_time=ts(),
                id_card=pb.IdCardData(
                    name=card.name,
                    id_number=card.id_number[:-1] + "0"
                    if card.id_number[-1] != "0"
                    else card.id_number[:-1] + "1",
                ),
            ),
            code_scan("s-1", code),  # the same scan twice in one message
        ]
    )
    (response,) = await stream(stack, device.md, first)
    got = [(d.scan_id, d.ack, d.reason) for d in response.decisions]
    assert got == [
        ("s-1", pb.SCAN_ACK_RECORDED, ""),
        ("s-2", pb.SCAN_ACK_RECORDED, ""),
        ("s-3", pb.SCAN_ACK_REJECTED, "CODE_BAD_BASE45"),
        ("s-4", pb.SCAN_ACK_REJECTED, "SCAN_TIME_INVALID"),
        ("s-5", pb.SCAN_ACK_REJECTED, "SCAN_TIME_INVALID"),
        ("s-6", pb.SCAN_ACK_REJECTED, "SCAN_SUBJECT_MISSING"),
        ("", pb.SCAN_ACK_REJECTED, "SCAN_ID_INVALID"),
        ("s-8", pb.SCAN_ACK_REJECTED, "ID_NUMBER_INVALID"),
        ("s-1", pb.SCAN_ACK_DUPLICATE, ""),
    ]
    decisions = list(response.decisions)
    assert decisions[0].decision == common_pb2.PASSAGE_DECISION_ALLOW
    assert decisions[8].passage_id == decisions[0].passage_id
    assert decisions[1].identity.masked_name.endswith("*")
    assert await stack.count(Passage) == 2
    assert await stack.count(Person, Person.managed.is_(True)) == 1

    # The same scans on a new stream (device reconnected): duplicates with the stored decision.
    (again,) = await stream(
        stack, device.md, pb.StreamScansRequest(scans=[code_scan("s-1", code), first.scans[1]])
    )
    assert [(d.ack, d.passage_id) for d in again.decisions] == [
        (pb.SCAN_ACK_DUPLICATE, decisions[0].passage_id),
        (pb.SCAN_ACK_DUPLICATE, decisions[1].passage_id),
    ]
    assert again.decisions[0].decision == common_pb2.PASSAGE_DECISION_ALLOW
    assert await stack.count(Passage) == 2


async def test_offline_scan_and_message_limits(stack: GateStack) -> None:
    checkpoint = await stack.checkpoint()
    staff = await stack.staff(checkpoint)
    resident, code = await new_code(stack)
    assert resident.person_id is not None
    await stack.set_color(resident.person_id, 3)
    when = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=30)
    (response,) = await stream(
        stack,
        staff.md,
        pb.StreamScansRequest(
            scans=[
                pb.Scan(
                    scan_id="off-1",
                    scan_time=ts(when),
                    code=code,
                    offline_decision=common_pb2.PASSAGE_DECISION_ALLOW,
                )
            ]
        ),
    )
    (decision,) = response.decisions
    assert decision.ack == pb.SCAN_ACK_RECORDED
    assert decision.decision == common_pb2.PASSAGE_DECISION_ALLOW  # what happened at the gate
    assert decision.color == common_pb2.CODE_COLOR_RED  # what the server knows now
    listed = await stack.checkpoints.ListPassages(pb.ListPassagesRequest(), metadata=staff.md)
    (passage,) = listed.passages
    assert passage.offline
    assert abs(passage.occurred_at.ToDatetime(dt.UTC) - when) < dt.timedelta(milliseconds=5)
    for scans in ([], [code_scan(f"x{i}", code) for i in range(101)]):
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await stream(stack, staff.md, pb.StreamScansRequest(scans=scans))
        assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert field_violations(err.value) == ["scans"]
    assert await stack.count(Passage) == 1


async def test_backpressure_one_message_at_a_time_in_order(stack: GateStack) -> None:
    checkpoint = await stack.checkpoint()
    device = await stack.device(checkpoint)
    _, code = await new_code(stack)
    db = stack.platform.db
    original: Callable[..., Any] = db.run
    in_flight = 0
    peak = 0

    async def counting_run(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            await asyncio.sleep(0.01)
            return await original(fn, *args, **kwargs)
        finally:
            in_flight -= 1

    db.run = counting_run  # type: ignore[method-assign]
    try:
        requests = [
            pb.StreamScansRequest(scans=[code_scan(f"b-{i}-{j}", code) for j in range(5)])
            for i in range(20)
        ]
        responses = await stream(stack, device.md, *requests)
    finally:
        db.run = original  # type: ignore[method-assign]
    assert peak == 1  # the next message is read only after the previous one is answered
    assert [[d.scan_id for d in r.decisions] for r in responses] == [
        [s.scan_id for s in r.scans] for r in requests
    ]
    assert all(d.ack == pb.SCAN_ACK_RECORDED for r in responses for d in r.decisions)
    assert await stack.count(Passage) == 100


async def test_register_by_id_card(stack: GateStack) -> None:
    checkpoint = await stack.checkpoint("510411")
    staff = await stack.staff(checkpoint, "510411")
    card = people.person("510411")
    request = pb.RegisterByIdCardRequest(
        request_id="reg-1",
        id_card=pb.IdCardData(name=card.name, id_number=card.id_number, sex_code="1"),
        method=common_pb2.PASSAGE_METHOD_ID_NFC,
        temperature_celsius=36.6,
    )
    first = await stack.checkpoints.RegisterByIdCard(request, metadata=staff.md)
    assert first.newly_registered
    assert first.color == common_pb2.CODE_COLOR_GREEN
    assert first.passage.division_code == "510411"
    assert first.passage.method == common_pb2.PASSAGE_METHOD_ID_NFC
    assert first.passage.identity.masked_id_number.startswith(card.id_number[0])
    assert card.id_number not in first.SerializeToString().decode("utf-8", "replace")
    retry = await stack.checkpoints.RegisterByIdCard(request, metadata=staff.md)
    assert retry == first
    second = await stack.checkpoints.RegisterByIdCard(
        pb.RegisterByIdCardRequest(request_id="reg-2", id_card=request.id_card),
        metadata=staff.md,
    )
    assert not second.newly_registered
    assert second.passage.passage_id != first.passage.passage_id
    assert await stack.count(Passage) == 2
    assert await stack.count(Person) == 1
    before = await stack.count(IdempotencyRecord)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.checkpoints.RegisterByIdCard(
            pb.RegisterByIdCardRequest(
                id_card=pb.IdCardData(name="", id_number="123", sex_code="7"),
                method=common_pb2.PASSAGE_METHOD_QR_CODE,
                temperature_celsius=99,
            ),
            metadata=staff.md,
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert sorted(field_violations(err.value)) == sorted(
        ["id_card.name", "id_card.id_number", "id_card.sex_code", "method", "temperature_celsius"]
    )
    assert await stack.count(Passage) == 2
    assert await stack.count(IdempotencyRecord) == before


async def test_passages_and_residents_stay_in_their_jurisdiction(stack: GateStack) -> None:
    east = await stack.checkpoint("510402", "东区卡口")
    west = await stack.checkpoint("510403", "西区卡口")
    east_staff = await stack.staff(east, "510402")
    west_staff = await stack.staff(west, "510403")
    _, code = await new_code(stack)  # a resident of 510402
    west_person, _ = await stack.person("510403")
    await stack.set_color(west_person, 2)
    (east_resp,) = await stream(
        stack,
        east_staff.md,
        pb.StreamScansRequest(scans=[code_scan(f"e-{i}", code) for i in range(7)]),
    )
    assert all(d.ack == pb.SCAN_ACK_RECORDED for d in east_resp.decisions)

    # Keyset paging, newest first, only the caller's checkpoint.
    seen: list[str] = []
    token = ""
    while True:
        page = await stack.checkpoints.ListPassages(
            pb.ListPassagesRequest(page_size=3, page_token=token), metadata=east_staff.md
        )
        seen.extend(p.passage_id for p in page.passages)
        assert all(p.checkpoint_name == "东区卡口" for p in page.passages)
        token = page.next_page_token
        if not token:
            break
    assert len(seen) == len(set(seen)) == 7
    west_page = await stack.checkpoints.ListPassages(
        pb.ListPassagesRequest(), metadata=west_staff.md
    )
    assert list(west_page.passages) == []
    with pytest.raises(grpc.aio.AioRpcError) as err:  # a token of another checkpoint's list
        await stack.checkpoints.ListPassages(
            pb.ListPassagesRequest(
                page_size=3,
                page_token=(
                    await stack.checkpoints.ListPassages(
                        pb.ListPassagesRequest(page_size=3), metadata=east_staff.md
                    )
                ).next_page_token,
            ),
            metadata=west_staff.md,
        )
    assert field_violations(err.value) == ["page_token"]
    start = ts(dt.datetime.now(dt.UTC) - dt.timedelta(days=40))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.checkpoints.ListPassages(
            pb.ListPassagesRequest(start_time=start), metadata=east_staff.md
        )
    assert field_violations(err.value) == ["start_time"]

    east_list = await stack.checkpoints.ListJurisdictionResidents(
        pb.ListJurisdictionResidentsRequest(), metadata=east_staff.md
    )
    assert {r.division_code for r in east_list.residents} == {"510402"}
    west_list = await stack.checkpoints.ListJurisdictionResidents(
        pb.ListJurisdictionResidentsRequest(), metadata=west_staff.md
    )
    assert [r.subject_id for r in west_list.residents] == [west_person]
    yellow = await stack.checkpoints.ListJurisdictionResidents(
        pb.ListJurisdictionResidentsRequest(color=common_pb2.CODE_COLOR_YELLOW),
        metadata=west_staff.md,
    )
    assert [r.color for r in yellow.residents] == [common_pb2.CODE_COLOR_YELLOW]
    green = await stack.checkpoints.ListJurisdictionResidents(
        pb.ListJurisdictionResidentsRequest(color=common_pb2.CODE_COLOR_GREEN),
        metadata=west_staff.md,
    )
    assert list(green.residents) == []
    city_admin = await stack.account("district_admin", division="510400")
    city = await stack.checkpoints.ListJurisdictionResidents(
        pb.ListJurisdictionResidentsRequest(), metadata=city_admin.md
    )
    assert {r.division_code for r in city.residents} == {"510402", "510403"}


async def test_add_jurisdiction_resident(stack: GateStack) -> None:
    checkpoint = await stack.checkpoint("510421")
    staff = await stack.staff(checkpoint, "510421")
    record = people.person("510421")
    request = pb.AddJurisdictionResidentRequest(
        request_id="add-1",
        identity=res_pb.PersonIdentity(name=record.name, id_number=record.id_number),
        phone=record.phone,
        address=record.address,
    )
    added = await stack.checkpoints.AddJurisdictionResident(request, metadata=staff.md)
    resident = added.resident
    assert resident.managed
    assert resident.division_code == "510421"
    assert resident.identity.masked_phone.endswith(record.phone[-4:])
    assert record.id_number not in resident.identity.masked_id_number
    assert await stack.checkpoints.AddJurisdictionResident(request, metadata=staff.md) == added
    request.request_id = "add-2"
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.checkpoints.AddJurisdictionResident(request, metadata=staff.md)
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stack.checkpoints.AddJurisdictionResident(
            pb.AddJurisdictionResidentRequest(
                identity=res_pb.PersonIdentity(name=record.name, id_number="1"),
                phone="12",
            ),
            metadata=staff.md,
        )
    assert sorted(field_violations(err.value)) == ["address", "identity.id_number", "phone"]
    assert await stack.count(Person) == 1
