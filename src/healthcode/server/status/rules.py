"""The status rules: how a person's colour follows from declarations, travel, risk lists and
official decisions. Versioned (:data:`RULES_VERSION`); every colour records the version that
computed it. ADR: docs/adr/0003-status-rules.md.

Rules of version 2022.1
-----------------------

================= ====== =============================================== ======================
rule              colour applies when                                    until
================= ====== =============================================== ======================
FEVER             yellow the *latest* health declaration is at most 24 h declared_at + 24 h, or
                         old and its temperature is >= 37.3 °C           a newer declaration
SYMPTOMS          yellow the latest health declaration (<= 24 h old)     declared_at + 24 h, or
                         lists any symptom                               a newer declaration
RISK_AREA_TRAVEL  yellow a travel declaration with arrival < 14 days ago arrived_at + 14 days,
                         names a division that is a risk area now (an    or the area is
                         area code ending in ``00`` covers its districts) cleared
SECONDARY_CONTACT yellow an active risk-list entry (by ID-number token)  the entry's expiry
                         of kind SECONDARY_CONTACT (次密接)
CLOSE_CONTACT     red    an active risk-list entry of kind CLOSE_CONTACT the entry's expiry
                         (密接)
CONFIRMED         red    an active risk-list entry of kind CONFIRMED     the entry's expiry
                         (确诊)
OFFICIAL_DECISION named  an APPROVED status change (proposed by one      its expires_at, or
                         official, approved by another), not expired,    until lifted (appeal,
                         not lifted                                      newer decision)
================= ====== =============================================== ======================

Combination
    Without an official decision the strongest colour of all automatic rules wins (red > yellow >
    green); with none, green. An official decision in force sets the colour it names (that is how
    officials clear a person after investigation, and how they turn a person red) *for everything
    known when it was approved*: automatic rules whose evidence (declaration time, list import
    time, risk-area designation time) is newer than the approval apply again, and the strongest of
    the decision and those newer rules wins. A decision therefore never hides a later fever or a
    later close-contact listing. Overridden rules are not listed as reasons; the decision is.

The way back to green
    Every rule runs out by itself (24 h, 14 days, the list's expiry, the decision's expiry) or is
    superseded (a newer normal declaration, a cleared risk area, a lifted or newer decision).
    ``Person.status_valid_until`` holds the earliest moment any rule runs out, so
    :func:`current_color` recomputes exactly when something may change and is query-free otherwise.
    Writers of new evidence (declarations, imports, decisions) call :func:`recompute`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from healthcode_sdk._gen.healthcode.v1 import common_pb2
from sqlalchemy import select
from sqlalchemy.orm import Session

from healthcode.common.identity import PANZHIHUA_DIVISIONS
from healthcode.server.common.convert import to_timestamp
from healthcode.server.db.models import Person
from healthcode.server.residents.models import HealthDeclaration, TravelDeclaration
from healthcode.server.status.models import RiskArea, RiskListEntry, StatusChange

RULES_VERSION = "2022.1"

GREEN = 1
YELLOW = 2
RED = 3

FEVER_CELSIUS = 37.3
DECLARATION_VALID = dt.timedelta(hours=24)
TRAVEL_WINDOW = dt.timedelta(days=14)

#: Risk-list kind -> (rule id, colour).
LIST_RULES: dict[str, tuple[str, int]] = {
    "CONFIRMED": ("CONFIRMED", RED),
    "CLOSE_CONTACT": ("CLOSE_CONTACT", RED),
    "SECONDARY_CONTACT": ("SECONDARY_CONTACT", YELLOW),
}

_SYMPTOM_NAMES: dict[str, str] = {
    "SYMPTOM_FEVER": "发热",
    "SYMPTOM_COUGH": "干咳",
    "SYMPTOM_FATIGUE": "乏力",
    "SYMPTOM_SORE_THROAT": "咽痛",
    "SYMPTOM_LOSS_OF_SMELL_OR_TASTE": "嗅觉或味觉减退",
    "SYMPTOM_SHORTNESS_OF_BREATH": "呼吸困难",
    "SYMPTOM_DIARRHEA": "腹泻",
}
_COLOR_NAMES = {GREEN: "绿码", YELLOW: "黄码", RED: "红码"}
_LIST_NAMES = {
    "CONFIRMED": "确诊病例",
    "CLOSE_CONTACT": "密切接触者",
    "SECONDARY_CONTACT": "次密切接触者",
}


@dataclass(frozen=True)
class Reason:
    """One rule that applies to a person now."""

    rule: str
    color: int
    explanation: str
    #: When the rule stops applying by itself; None = until cleared.
    until: dt.datetime | None
    #: When the evidence behind the rule appeared (compared with official decisions).
    evidence_at: dt.datetime


@dataclass
class Evaluation:
    """The outcome of the rules for one person at one moment."""

    color: int
    #: Contributing rules, strongest first.
    reasons: list[Reason] = field(default_factory=list)
    #: The official decision in force, if any.
    decision: StatusChange | None = None
    #: The earliest moment any evaluated rule (contributing or overridden) runs out.
    valid_until: dt.datetime | None = None


def area_covers(area_code: str, visited_code: str) -> bool:
    """A risk area covers the same code; a code ending in ``00`` covers its whole prefix
    (``510400`` covers ``510402``; ``510000`` covers all of Sichuan)."""
    if area_code == visited_code:
        return True
    if area_code.endswith("0000"):
        return visited_code.startswith(area_code[:2])
    if area_code.endswith("00"):
        return visited_code.startswith(area_code[:4])
    return False


def _division_name(code: str) -> str:
    return PANZHIHUA_DIVISIONS.get(code, code)


def _fmt(moment: dt.datetime) -> str:
    # Shown to people in China: Beijing time.
    return moment.astimezone(dt.timezone(dt.timedelta(hours=8))).strftime("%Y-%m-%d %H:%M")


def _declaration_reasons(session: Session, person: Person, now: dt.datetime) -> list[Reason]:
    latest = session.execute(
        select(HealthDeclaration)
        .where(HealthDeclaration.person_id == person.id, HealthDeclaration.declared_at <= now)
        .order_by(HealthDeclaration.declared_at.desc(), HealthDeclaration.id.desc())
        .limit(1)
    ).scalar_one_or_none()
    if latest is None or latest.declared_at <= now - DECLARATION_VALID:
        return []
    until = latest.declared_at + DECLARATION_VALID
    reasons: list[Reason] = []
    if latest.temperature >= FEVER_CELSIUS:
        reasons.append(
            Reason(
                "FEVER",
                YELLOW,
                f"最近一次健康申报体温 {latest.temperature:.1f} °C，达到或超过 {FEVER_CELSIUS} °C，"
                "赋黄码；提交体温正常且无症状的新申报，或申报满 24 小时后自动恢复。",
                until,
                latest.declared_at,
            )
        )
    symptoms = [s for s in (latest.symptoms or []) if s and s != "SYMPTOM_UNSPECIFIED"]
    if symptoms:
        names = "、".join(_SYMPTOM_NAMES.get(s, s) for s in symptoms)
        reasons.append(
            Reason(
                "SYMPTOMS",
                YELLOW,
                f"最近一次健康申报有症状（{names}），赋黄码；提交无症状且体温正常的新申报，"
                "或申报满 24 小时后自动恢复。",
                until,
                latest.declared_at,
            )
        )
    return reasons


def _travel_reasons(session: Session, person: Person, now: dt.datetime) -> list[Reason]:
    travels = (
        session.execute(
            select(TravelDeclaration).where(
                TravelDeclaration.person_id == person.id,
                TravelDeclaration.arrived_at > now - TRAVEL_WINDOW,
                TravelDeclaration.declared_at <= now,
            )
        )
        .scalars()
        .all()
    )
    if not travels:
        return []
    areas = session.execute(select(RiskArea)).scalars().all()
    if not areas:
        return []
    best: Reason | None = None
    for travel in travels:
        for code in travel.visited_division_codes or []:
            for area in areas:
                if not area_covers(area.division_code, code):
                    continue
                until = travel.arrived_at + TRAVEL_WINDOW
                evidence = max(travel.declared_at, area.added_at)
                if best is None or until > best.until:  # type: ignore[operator]
                    best = Reason(
                        "RISK_AREA_TRAVEL",
                        YELLOW,
                        f"申报 14 天内到访风险地区（{_division_name(code)}），"
                        f"自抵达之日起 14 天内为黄码，至 {_fmt(until)} 自动恢复。",
                        until,
                        evidence,
                    )
    return [best] if best is not None else []


def _list_reasons(session: Session, person: Person, now: dt.datetime) -> list[Reason]:
    entries = (
        session.execute(
            select(RiskListEntry).where(
                RiskListEntry.id_token == person.id_token, RiskListEntry.expires_at > now
            )
        )
        .scalars()
        .all()
    )
    by_rule: dict[str, Reason] = {}
    for entry in entries:
        rule, color = LIST_RULES.get(entry.kind, ("", 0))
        if not rule:
            continue
        reason = Reason(
            rule,
            color,
            f"被卫生健康部门列为{_LIST_NAMES[entry.kind]}（依据：{entry.legal_basis}），"
            f"赋{_COLOR_NAMES[color]}，至 {_fmt(entry.expires_at)} 列管期满后自动恢复。",
            entry.expires_at,
            entry.created_at,
        )
        known = by_rule.get(rule)
        if known is None or (reason.until or now) > (known.until or now):
            by_rule[rule] = reason
    return list(by_rule.values())


def _decision_in_force(session: Session, person: Person, now: dt.datetime) -> StatusChange | None:
    changes = (
        session.execute(
            select(StatusChange).where(
                StatusChange.person_id == person.id, StatusChange.state == "APPROVED"
            )
        )
        .scalars()
        .all()
    )
    live = [
        c
        for c in changes
        if (c.expires_at is None or c.expires_at > now)
        and c.reviewed_at is not None
        and c.reviewed_at <= now
    ]
    if not live:
        return None
    # The most recently approved decision supersedes older ones.
    return max(live, key=lambda c: (c.reviewed_at, c.id))


def _decision_reason(change: StatusChange) -> Reason:
    assert change.reviewed_at is not None
    end = f"至 {_fmt(change.expires_at)} 到期" if change.expires_at else "至撤销为止"
    return Reason(
        "OFFICIAL_DECISION",
        change.color,
        f"经两名工作人员审批的官方决定：{_COLOR_NAMES.get(change.color, '')}，"
        f"提议人 {change.proposed_by_label}，批准人 {change.reviewed_by_label}，"
        f"法律依据：{change.legal_basis}；{end}，可通过纠错申请提出申诉。",
        change.expires_at,
        change.reviewed_at,
    )


def _strongest_first(reasons: Iterable[Reason]) -> list[Reason]:
    return sorted(reasons, key=lambda r: (-r.color, r.rule))


def evaluate(session: Session, person: Person, now: dt.datetime) -> Evaluation:
    """Apply every rule to ``person`` at ``now`` (reads only; see :func:`recompute`)."""
    automatic = [
        *_declaration_reasons(session, person, now),
        *_travel_reasons(session, person, now),
        *_list_reasons(session, person, now),
    ]
    decision = _decision_in_force(session, person, now)
    untils = [r.until for r in automatic if r.until is not None]
    if decision is not None:
        assert decision.reviewed_at is not None
        if decision.expires_at is not None:
            untils.append(decision.expires_at)
        newer = [r for r in automatic if r.evidence_at > decision.reviewed_at]
        contributing = [_decision_reason(decision), *newer]
    else:
        contributing = automatic
    color = max((r.color for r in contributing), default=GREEN)
    return Evaluation(
        color=color,
        reasons=_strongest_first(contributing),
        decision=decision,
        valid_until=min(untils) if untils else None,
    )


def _store(person: Person, result: Evaluation, now: dt.datetime) -> None:
    person.color = result.color
    person.rules_version = RULES_VERSION
    person.status_updated_at = now
    person.status_valid_until = result.valid_until


def recompute(session: Session, person: Person, now: dt.datetime) -> None:
    """Recompute and store ``person``'s colour (call after writing any new evidence)."""
    _store(person, evaluate(session, person, now), now)


def _is_fresh(person: Person, now: dt.datetime) -> bool:
    return person.rules_version == RULES_VERSION and (
        person.status_valid_until is None or now < person.status_valid_until
    )


def current_color(session: Session, person: Person, now: dt.datetime) -> int:
    """The person's colour now: the stored colour while it is valid (no query), else recomputed."""
    if not _is_fresh(person, now):
        recompute(session, person, now)
    return person.color


def recompute_by_id_tokens(session: Session, id_tokens: Sequence[str], now: dt.datetime) -> int:
    """Recompute everyone whose ID-number token is listed (risk-list imports); returns how many."""
    unique = sorted(set(id_tokens))
    count = 0
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        for person in session.execute(select(Person).where(Person.id_token.in_(chunk))).scalars():
            recompute(session, person, now)
            count += 1
    return count


def recompute_by_person_ids(session: Session, person_ids: Iterable[str], now: dt.datetime) -> int:
    """Recompute the listed persons; returns how many exist."""
    unique = sorted(set(person_ids))
    count = 0
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        for person in session.execute(select(Person).where(Person.id.in_(chunk))).scalars():
            recompute(session, person, now)
            count += 1
    return count


def recompute_travellers(session: Session, division_codes: Iterable[str], now: dt.datetime) -> int:
    """Recompute everyone whose recent travel declaration names a division covered by one of
    ``division_codes`` (risk areas added or cleared); returns how many."""
    codes = set(division_codes)
    if not codes:
        return 0
    rows = session.execute(
        select(TravelDeclaration.person_id, TravelDeclaration.visited_division_codes).where(
            TravelDeclaration.arrived_at > now - TRAVEL_WINDOW
        )
    ).all()
    affected = {
        person_id
        for person_id, visited in rows
        if any(area_covers(area, code) for area in codes for code in (visited or []))
    }
    return recompute_by_person_ids(session, affected, now)


def decision_to_proto(change: StatusChange) -> common_pb2.StatusDecision:
    """How an official decision is shown to the person: colour, legal basis, who proposed and
    who approved it, and when."""
    msg = common_pb2.StatusDecision(
        change_id=change.id,
        color=change.color,  # type: ignore[arg-type]
        legal_basis=change.legal_basis,
        proposed_by=change.proposed_by_label,
        approved_by=change.reviewed_by_label,
    )
    ts = to_timestamp(change.reviewed_at)
    if ts is not None:
        msg.decide_time.CopyFrom(ts)
    return msg


def health_status(session: Session, person: Person, now: dt.datetime) -> common_pb2.HealthStatus:
    """The person's status with every contributing reason (Chinese explanations) and the
    official decision in force (proposer, approver, legal basis). Recomputes and stores."""
    result = evaluate(session, person, now)
    _store(person, result, now)
    status = common_pb2.HealthStatus(
        subject_id=person.id,
        color=result.color,  # type: ignore[arg-type]
        rules_version=RULES_VERSION,
    )
    for reason in result.reasons:
        item = status.reasons.add(
            rule=reason.rule,
            color=reason.color,
            explanation=reason.explanation,
        )
        until = to_timestamp(reason.until)
        if until is not None:
            item.until.CopyFrom(until)
    if result.decision is not None:
        status.decisions.append(decision_to_proto(result.decision))
    updated = to_timestamp(now)
    assert updated is not None
    status.update_time.CopyFrom(updated)
    return status


__all__ = [
    "DECLARATION_VALID",
    "FEVER_CELSIUS",
    "GREEN",
    "RED",
    "RULES_VERSION",
    "TRAVEL_WINDOW",
    "YELLOW",
    "Evaluation",
    "Reason",
    "area_covers",
    "current_color",
    "decision_to_proto",
    "evaluate",
    "health_status",
    "recompute",
    "recompute_by_id_tokens",
    "recompute_by_person_ids",
    "recompute_travellers",
]
