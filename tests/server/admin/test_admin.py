"""AdminService rules: two-person approval, appeals, jurisdiction, risk-list import validation,
passage queries and retention settings. Handlers are called directly with a real database; the
vault is an in-test stand-in until the lead's ``platform_stack`` fixture exists."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pytest
from healthcode_sdk._gen.healthcode.v1 import admin_service_pb2 as pb
from healthcode_sdk._gen.healthcode.v1 import common_pb2
from sqlalchemy import func, select

from healthcode.common.errors import FailedPrecondition, InvalidArgument, PermissionDenied
from healthcode.common.identity import check_character
from healthcode.server.admin import store
from healthcode.server.admin.service import AdminService
from healthcode.server.common.principal import Principal, Role, reset_principal, set_principal
from healthcode.server.db.engine import Database
from healthcode.server.db.models import AuditEvent, IdempotencyRecord, Person
from healthcode.server.settings import ServerSettings
from healthcode.server.status import rules
from healthcode.server.status.models import RiskListEntry, StatusChange
from tests.server.status.helpers import (
    T0,
    checkpoint,
    correction,
    official,
    open_db,
    passage,
    person,
)


def id_number(serial: int) -> str:
    body = f"510402199001{serial % 28 + 1:02d}{serial % 1000:03d}"
    return body + check_character(body)


@dataclass
class _Result:
    token: str
    masked: str
    created: bool


class StandInVault:
    """Deterministic tokens (same value, same token); counts round trips."""

    def __init__(self) -> None:
        self.calls = 0

    @staticmethod
    def token_for(value: str) -> str:
        return "idn_" + hashlib.sha256(value.encode()).hexdigest()[:26]

    async def tokenize(self, items: list[Any]) -> list[_Result]:
        self.calls += 1
        return [_Result(self.token_for(i.value), "5***", True) for i in items]

    async def lookup(self, field_type: Any, values: list[str]) -> list[str | None]:
        self.calls += 1
        return [self.token_for(v) for v in values]


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = open_db(database_url)
    yield database
    database.close()


@pytest.fixture
def service(db: Database, tmp_path: Any) -> AdminService:
    platform = SimpleNamespace(
        db=db,
        vault=StandInVault(),
        settings=ServerSettings(home=tmp_path, database_url="sqlite://", retention_days=28),
    )
    return AdminService(platform)  # type: ignore[arg-type]


async def call(service: AdminService, principal: Principal, method: str, request: Any) -> Any:
    token = set_principal(principal)
    try:
        return await getattr(service, method)(request, None)
    finally:
        reset_principal(token)


def count(db: Database, model: Any) -> int:
    with db.sessions.begin() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def setup_people(db: Database) -> dict[str, Any]:
    with db.sessions.begin() as s:
        return {
            "east": person(s, "510402"),
            "west": person(s, "510403"),
            "east_admin": official(s, Role.DISTRICT_ADMIN, "510402", "东区 甲"),
            "east_admin2": official(s, Role.DISTRICT_ADMIN, "510402", "东区 乙"),
            "west_admin": official(s, Role.DISTRICT_ADMIN, "510403", "西区 丙"),
            "ha": official(s, Role.HEALTH_AUTHORITY, None, "市卫健委 丁"),
            "ha2": official(s, Role.HEALTH_AUTHORITY, None, "市卫健委 戊"),
        }


LEGAL = "《中华人民共和国传染病防治法》第三十九条"


async def test_two_person_rule_and_decision_visible(service: AdminService, db: Database) -> None:
    w = setup_people(db)
    resp = await call(
        service,
        w["east_admin"],
        "ProposeStatusChange",
        pb.ProposeStatusChangeRequest(
            request_id="r1",
            subject_id=w["east"].id,
            color=common_pb2.CODE_COLOR_RED,
            legal_basis=LEGAL,
            duration_days=7,
        ),
    )
    change = resp.change
    assert change.state == pb.STATUS_CHANGE_STATE_PENDING
    with db.sessions.begin() as s:
        assert s.get(Person, w["east"].id).color == rules.GREEN  # not in force yet
    with pytest.raises(PermissionDenied) as denied:
        await call(
            service,
            w["east_admin"],
            "ReviewStatusChange",
            pb.ReviewStatusChangeRequest(change_id=change.change_id, approve=True),
        )
    assert denied.value.reason == "SECOND_APPROVER_REQUIRED"
    with pytest.raises(PermissionDenied) as outside:
        await call(
            service,
            w["west_admin"],
            "ReviewStatusChange",
            pb.ReviewStatusChangeRequest(change_id=change.change_id, approve=True),
        )
    assert outside.value.reason == "OUTSIDE_JURISDICTION"
    reviewed = await call(
        service,
        w["ha"],
        "ReviewStatusChange",
        pb.ReviewStatusChangeRequest(change_id=change.change_id, approve=True, comment="核实"),
    )
    assert reviewed.change.state == pb.STATUS_CHANGE_STATE_APPROVED
    assert reviewed.change.HasField("expire_time")
    with pytest.raises(FailedPrecondition):
        await call(
            service,
            w["ha2"],
            "ReviewStatusChange",
            pb.ReviewStatusChangeRequest(change_id=change.change_id, approve=False),
        )
    with db.sessions.begin() as s:
        p = s.get(Person, w["east"].id)
        assert p.color == rules.RED
        status = rules.health_status(s, p, dt.datetime.now(dt.UTC))
        assert status.decisions[0].proposed_by == "东区 甲 (district_admin)"
        assert status.decisions[0].approved_by == "市卫健委 丁 (health_authority)"
        assert status.decisions[0].legal_basis == LEGAL
        outcomes = set(s.scalars(select(AuditEvent.outcome)).all())
    assert {"OK", "SECOND_APPROVER_REQUIRED", "OUTSIDE_JURISDICTION"} <= outcomes
    # Idempotent retry returns the same change.
    again = await call(
        service,
        w["east_admin"],
        "ProposeStatusChange",
        pb.ProposeStatusChangeRequest(
            request_id="r1",
            subject_id=w["east"].id,
            color=common_pb2.CODE_COLOR_RED,
            legal_basis=LEGAL,
            duration_days=7,
        ),
    )
    assert again.change.change_id == change.change_id


async def test_propose_validation_and_jurisdiction(service: AdminService, db: Database) -> None:
    w = setup_people(db)
    with pytest.raises(InvalidArgument) as bad:
        await call(
            service,
            w["ha"],
            "ProposeStatusChange",
            pb.ProposeStatusChangeRequest(
                subject_id=w["east"].id, id_number=id_number(1), legal_basis="短", duration_days=61
            ),
        )
    fields = {v.field for v in bad.value.violations}
    assert fields == {"subject_id", "color", "legal_basis", "duration_days"}
    with pytest.raises(PermissionDenied):
        await call(
            service,
            w["west_admin"],
            "ProposeStatusChange",
            pb.ProposeStatusChangeRequest(
                subject_id=w["east"].id, color=common_pb2.CODE_COLOR_RED, legal_basis=LEGAL
            ),
        )
    assert count(db, StatusChange) == 0


async def test_accepted_appeal_lifts_decision(service: AdminService, db: Database) -> None:
    w = setup_people(db)
    with db.sessions.begin() as s:
        p = s.get(Person, w["east"].id)
        change = store.propose_status_change(s, w["east_admin"], p, rules.RED, LEGAL, 0, T0)
        store.review_status_change(s, w["ha"], change.id, True, "", T0)
        appeal = correction(s, p, change.id)
        assert p.color == rules.RED
    with pytest.raises(PermissionDenied) as involved:
        await call(
            service,
            w["ha"],
            "ReviewCorrection",
            pb.ReviewCorrectionRequest(correction_id=appeal.id, accept=True, comment="复核"),
        )
    assert involved.value.reason == "REVIEWER_INVOLVED_IN_DECISION"
    with pytest.raises(InvalidArgument):
        await call(
            service,
            w["ha2"],
            "ReviewCorrection",
            pb.ReviewCorrectionRequest(correction_id=appeal.id, accept=True),
        )
    listed = await call(
        service, w["east_admin2"], "ListCorrections", pb.ListCorrectionsRequest(pending_only=True)
    )
    assert [c.correction_id for c in listed.corrections] == [appeal.id]
    hidden = await call(service, w["west_admin"], "ListCorrections", pb.ListCorrectionsRequest())
    assert list(hidden.corrections) == []
    resp = await call(
        service,
        w["ha2"],
        "ReviewCorrection",
        pb.ReviewCorrectionRequest(correction_id=appeal.id, accept=True, comment="经复核，非密接"),
    )
    assert resp.correction.accepted
    with db.sessions.begin() as s:
        assert s.get(StatusChange, change.id).state == "LIFTED"
        assert s.get(Person, w["east"].id).color == rules.GREEN


async def test_import_rejects_bad_entries_wholesale(service: AdminService, db: Database) -> None:
    w = setup_people(db)
    numbers = [id_number(i) for i in range(5)]
    numbers[3] = numbers[3][:-1] + ("0" if numbers[3][-1] != "0" else "1")
    with pytest.raises(InvalidArgument) as bad:
        await call(
            service,
            w["ha"],
            "ImportRiskList",
            pb.ImportRiskListRequest(
                kind=pb.RISK_LIST_KIND_CLOSE_CONTACT, id_numbers=numbers, legal_basis="流调"
            ),
        )
    assert [v.field for v in bad.value.violations] == ["id_numbers[3]"]
    assert service.platform.vault.calls == 0  # type: ignore[attr-defined]
    assert count(db, RiskListEntry) == 0
    assert count(db, IdempotencyRecord) == 0


async def test_import_matches_known_people(service: AdminService, db: Database) -> None:
    w = setup_people(db)
    known = id_number(7)
    with db.sessions.begin() as s:
        p = person(s, "510402", id_token=StandInVault.token_for(known))
    resp = await call(
        service,
        w["ha"],
        "ImportRiskList",
        pb.ImportRiskListRequest(
            request_id="imp-1",
            kind=pb.RISK_LIST_KIND_CLOSE_CONTACT,
            id_numbers=[known, id_number(8), known],
            legal_basis="市指挥部流调组名单",
        ),
    )
    assert (resp.matched, resp.unmatched) == (1, 1)
    assert service.platform.vault.calls == 1  # type: ignore[attr-defined]
    with db.sessions.begin() as s:
        assert s.get(Person, p.id).color == rules.RED
    assert count(db, RiskListEntry) == 2


async def test_query_passages(service: AdminService, db: Database) -> None:
    w = setup_people(db)
    now = dt.datetime.now(dt.UTC)
    with db.sessions.begin() as s:
        east_cp, west_cp = checkpoint(s, "510402"), checkpoint(s, "510403")
        p = s.get(Person, w["east"].id)
        passage(s, p, east_cp, now - dt.timedelta(hours=2))
        passage(s, p, west_cp, now - dt.timedelta(hours=1))
        passage(s, p, east_cp, now - dt.timedelta(days=40))
    start = common_pb2.google_dot_protobuf_dot_timestamp__pb2.Timestamp()
    start.FromDatetime(now - dt.timedelta(days=30))
    end = common_pb2.google_dot_protobuf_dot_timestamp__pb2.Timestamp()
    end.FromDatetime(now)
    req = pb.QueryPassagesRequest(subject_id=p.id, start_time=start, end_time=end, purpose="流调")
    everything = await call(service, w["ha"], "QueryPassages", req)
    assert len(everything.passages) == 2
    mine = await call(service, w["east_admin"], "QueryPassages", req)
    assert [x.checkpoint_id for x in mine.passages] == [east_cp.id]
    with pytest.raises(PermissionDenied):
        await call(
            service,
            w["west_admin"],
            "QueryPassages",
            pb.QueryPassagesRequest(
                checkpoint_id=east_cp.id, start_time=start, end_time=end, purpose="流调"
            ),
        )
    start.FromDatetime(now - dt.timedelta(days=32))
    with pytest.raises(InvalidArgument) as bad:
        await call(
            service,
            w["ha"],
            "QueryPassages",
            pb.QueryPassagesRequest(subject_id=p.id, start_time=start, end_time=end),
        )
    assert {v.field for v in bad.value.violations} == {"end_time", "purpose"}
    with db.sessions.begin() as s:
        purposes = s.scalars(
            select(AuditEvent.purpose).where(AuditEvent.action == "QueryPassages")
        ).all()
    assert "流调" in purposes


async def test_checkpoints_and_retention_settings(service: AdminService, db: Database) -> None:
    w = setup_people(db)
    with pytest.raises(PermissionDenied):
        await call(
            service,
            w["east_admin"],
            "CreateCheckpoint",
            pb.CreateCheckpointRequest(name="西区卡口", division_code="510403"),
        )
    made = await call(
        service,
        w["east_admin"],
        "CreateCheckpoint",
        pb.CreateCheckpointRequest(request_id="cp1", name="东区卡口", division_code="510402"),
    )
    await call(
        service,
        w["ha"],
        "CreateCheckpoint",
        pb.CreateCheckpointRequest(name="西区卡口", division_code="510403"),
    )
    east = await call(service, w["east_admin"], "ListCheckpoints", pb.ListCheckpointsRequest())
    assert [c.checkpoint_id for c in east.checkpoints] == [made.checkpoint.checkpoint_id]
    page = await call(service, w["ha"], "ListCheckpoints", pb.ListCheckpointsRequest(page_size=1))
    assert page.next_page_token
    rest = await call(
        service,
        w["ha"],
        "ListCheckpoints",
        pb.ListCheckpointsRequest(page_size=1, page_token=page.next_page_token),
    )
    assert rest.checkpoints[0].checkpoint_id != page.checkpoints[0].checkpoint_id
    got = await call(service, w["ha"], "GetRetentionSettings", pb.GetRetentionSettingsRequest())
    assert (got.settings.passage_days, got.settings.declaration_days) == (28, 28)
    with pytest.raises(InvalidArgument) as bad:
        await call(
            service,
            w["ha"],
            "UpdateRetentionSettings",
            pb.UpdateRetentionSettingsRequest(
                settings=pb.RetentionSettings(passage_days=0, declaration_days=400)
            ),
        )
    assert {v.field for v in bad.value.violations} == {
        "settings.passage_days",
        "settings.declaration_days",
    }
    await call(
        service,
        w["ha"],
        "UpdateRetentionSettings",
        pb.UpdateRetentionSettingsRequest(
            settings=pb.RetentionSettings(passage_days=14, declaration_days=7)
        ),
    )
    got = await call(service, w["ha"], "GetRetentionSettings", pb.GetRetentionSettingsRequest())
    assert (got.settings.passage_days, got.settings.declaration_days) == (14, 7)
