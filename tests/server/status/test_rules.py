"""Every status rule, its expiry, the strongest colour, and official decisions (SQLite + PG)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from sqlalchemy import event

from healthcode.server.admin import store
from healthcode.server.common.principal import Role
from healthcode.server.db.base import new_id
from healthcode.server.db.engine import Database
from healthcode.server.status import rules
from healthcode.server.status.models import RiskArea, RiskListEntry
from tests.server.status.helpers import T0, health, official, open_db, person, travel

H = dt.timedelta(hours=1)
D = dt.timedelta(days=1)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = open_db(database_url)
    yield database
    database.close()


def _list(session, id_token: str, kind: str, at: dt.datetime, days: int = 14) -> None:
    session.add(
        RiskListEntry(
            import_id=new_id(),
            kind=kind,
            id_token=id_token,
            legal_basis="市指挥部通告第12号",
            imported_by="t",
            created_at=at,
            expires_at=at + dt.timedelta(days=days),
        )
    )
    session.flush()


def test_no_evidence_is_green(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        rules.recompute(s, p, T0)
        assert p.color == rules.GREEN
        assert p.rules_version == rules.RULES_VERSION
        assert p.status_valid_until is None


def test_fever_yellow_until_24h(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        health(s, p, T0, temp=37.3)
        rules.recompute(s, p, T0 + H)
        assert p.color == rules.YELLOW
        assert p.status_valid_until == T0 + rules.DECLARATION_VALID
        status = rules.health_status(s, p, T0 + H)
        assert [r.rule for r in status.reasons] == ["FEVER"]
        assert "37.3" in status.reasons[0].explanation
        assert rules.current_color(s, p, T0 + 24 * H) == rules.GREEN


def test_below_threshold_is_green(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        health(s, p, T0, temp=37.2)
        rules.recompute(s, p, T0 + H)
        assert p.color == rules.GREEN


def test_symptoms_yellow_and_newer_normal_declaration_clears(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        health(s, p, T0, symptoms=["SYMPTOM_COUGH"])
        rules.recompute(s, p, T0 + H)
        assert p.color == rules.YELLOW
        assert [r.rule for r in rules.health_status(s, p, T0 + H).reasons] == ["SYMPTOMS"]
        health(s, p, T0 + 2 * H, temp=36.6)
        rules.recompute(s, p, T0 + 3 * H)
        assert p.color == rules.GREEN


def test_risk_area_travel_until_arrival_plus_14_days(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        s.add(RiskArea(division_code="420111", legal_basis="通告", added_by="t", added_at=T0))
        travel(s, p, ["420102"], arrived=T0 - 2 * D)  # another district: not covered
        travel(s, p, ["420111"], arrived=T0 - 3 * D)
        travel(s, p, ["420111"], arrived=T0 - 15 * D)  # more than 14 days ago
        rules.recompute(s, p, T0)
        assert p.color == rules.YELLOW
        assert p.status_valid_until == T0 + 11 * D
        assert rules.current_color(s, p, T0 + 11 * D) == rules.GREEN


def test_city_risk_area_covers_its_districts_and_clearing_restores_green(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        other = person(s)
        travel(s, p, ["510402"], arrived=T0 - D)
        travel(s, other, ["110101"], arrived=T0 - D)
        admin = official(s)
        store.update_risk_areas(s, admin, ["510400"], [], "市卫健委公告", T0)
        assert p.color == rules.YELLOW
        assert [r.rule for r in rules.health_status(s, p, T0).reasons] == ["RISK_AREA_TRAVEL"]
        assert rules.current_color(s, other, T0) == rules.GREEN
        store.update_risk_areas(s, admin, [], ["510400"], "解除", T0 + H)
        assert p.color == rules.GREEN


@pytest.mark.parametrize(
    ("kind", "color"),
    [("CLOSE_CONTACT", rules.RED), ("CONFIRMED", rules.RED), ("SECONDARY_CONTACT", rules.YELLOW)],
)
def test_risk_list_entries(db: Database, kind: str, color: int) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        _list(s, p.id_token, kind, T0, days=7)
        _list(s, "idn_someoneelse", "CONFIRMED", T0)
        rules.recompute(s, p, T0 + H)
        assert p.color == color
        status = rules.health_status(s, p, T0 + H)
        assert [r.rule for r in status.reasons] == [kind]
        assert "市指挥部通告第12号" in status.reasons[0].explanation
        assert rules.current_color(s, p, T0 + 7 * D) == rules.GREEN


def test_strongest_colour_wins_and_expiry_is_earliest(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        health(s, p, T0, temp=38.5, symptoms=["SYMPTOM_FATIGUE"])
        _list(s, p.id_token, "CLOSE_CONTACT", T0, days=14)
        rules.recompute(s, p, T0 + H)
        assert p.color == rules.RED
        assert p.status_valid_until == T0 + 24 * H
        status = rules.health_status(s, p, T0 + H)
        assert [r.rule for r in status.reasons] == ["CLOSE_CONTACT", "FEVER", "SYMPTOMS"]
        # The fever runs out; the listing does not.
        assert rules.current_color(s, p, T0 + 25 * H) == rules.RED
        assert p.status_valid_until == T0 + 14 * D


def test_current_color_is_query_free_while_valid(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        health(s, p, T0, temp=38.0)
        rules.recompute(s, p, T0 + H)
        statements: list[str] = []

        def count(*args: object) -> None:
            statements.append(str(args[2]))

        event.listen(db.engine, "before_cursor_execute", count)
        try:
            assert rules.current_color(s, p, T0 + 2 * H) == rules.YELLOW
        finally:
            event.remove(db.engine, "before_cursor_execute", count)
        assert statements == []


def test_stale_rules_version_recomputes(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        p.color, p.rules_version = rules.RED, "2020.0"
        assert rules.current_color(s, p, T0) == rules.GREEN
        assert p.rules_version == rules.RULES_VERSION


def _decide(s, p, color: int, at: dt.datetime, days: int = 0):
    proposer = official(s, Role.DISTRICT_ADMIN, "510402", "东区卫健局 李科员")
    approver = official(s, Role.HEALTH_AUTHORITY, None, "市卫健委 王科长")
    change = store.propose_status_change(
        s, proposer, p, color, "《传染病防治法》第三十九条", days, at
    )
    store.review_status_change(s, approver, change.id, True, "同意", at)
    return change


def test_official_decision_visible_with_who_and_why(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        change = _decide(s, p, rules.RED, T0, days=7)
        assert p.color == rules.RED
        status = rules.health_status(s, p, T0 + H)
        assert status.color == rules.RED
        assert [r.rule for r in status.reasons] == ["OFFICIAL_DECISION"]
        [decision] = status.decisions
        assert decision.change_id == change.id
        assert decision.legal_basis == "《传染病防治法》第三十九条"
        assert decision.proposed_by == "东区卫健局 李科员 (district_admin)"
        assert decision.approved_by == "市卫健委 王科长 (health_authority)"
        assert decision.decide_time.ToDatetime(dt.UTC) == T0
        assert rules.current_color(s, p, T0 + 7 * D) == rules.GREEN


def test_green_decision_clears_older_evidence_but_not_newer(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        _list(s, p.id_token, "CLOSE_CONTACT", T0 - D)
        rules.recompute(s, p, T0)
        assert p.color == rules.RED
        _decide(s, p, rules.GREEN, T0 + H)
        assert p.color == rules.GREEN
        status = rules.health_status(s, p, T0 + 2 * H)
        assert [r.rule for r in status.reasons] == ["OFFICIAL_DECISION"]
        # Evidence newer than the decision applies again.
        health(s, p, T0 + 3 * H, temp=38.2)
        rules.recompute(s, p, T0 + 3 * H)
        assert p.color == rules.YELLOW
        assert {r.rule for r in rules.health_status(s, p, T0 + 3 * H).reasons} == {
            "OFFICIAL_DECISION",
            "FEVER",
        }


def test_newer_decision_supersedes_older(db: Database) -> None:
    with db.sessions.begin() as s:
        p = person(s)
        first = _decide(s, p, rules.RED, T0)
        _decide(s, p, rules.GREEN, T0 + D)
        assert first.state == "LIFTED"
        assert p.color == rules.GREEN


def test_recompute_by_id_tokens(db: Database) -> None:
    with db.sessions.begin() as s:
        a, b = person(s), person(s)
        _list(s, a.id_token, "CONFIRMED", T0)
        assert rules.recompute_by_id_tokens(s, [a.id_token, "idn_unknown"], T0) == 1
        assert a.color == rules.RED
        assert b.rules_version == ""


def test_area_covers() -> None:
    assert rules.area_covers("510402", "510402")
    assert rules.area_covers("510400", "510411")
    assert rules.area_covers("510000", "513401")
    assert not rules.area_covers("510402", "510403")
    assert not rules.area_covers("510400", "520400")
