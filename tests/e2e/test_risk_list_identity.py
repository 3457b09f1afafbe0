"""Risk-list imports and the people they name, over real gRPC and a real vault (SQLite, PostgreSQL).

The vault refuses to give an ID number held by one subject to another, and a person's vault subject
is their ``Person.id``. An import reserves a person id for every listed person the platform does
not know yet; whoever registers that person later (the app, a dependent, a gate, a district) creates
the person with exactly that id, so they are red at once and erasing them erases the ID number.
"""

from __future__ import annotations

import datetime as dt
import uuid

from healthcode_sdk._gen.healthcode.v1 import (
    admin_service_pb2,
    checkpoint_service_pb2,
    common_pb2,
    resident_service_pb2,
)
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from healthcode.server.common.principal import Role
from healthcode.server.db.base import utcnow
from healthcode.server.db.models import Person
from healthcode.server.identity import erase_expired_reservations
from healthcode.server.retention import purge_expired
from healthcode.server.status.models import RiskListEntry
from healthcode.vault.fields import FieldType
from tests.fixtures import people
from tests.fixtures.platform import Client, Stack

GREEN, RED = common_pb2.CODE_COLOR_GREEN, common_pb2.CODE_COLOR_RED
LEGAL_BASIS = "攀枝花市疫情防控指挥部2022年第15号通告：密切接触者名单"


def rid() -> str:
    return uuid.uuid4().hex


def import_list(stack: Stack, id_numbers: list[str]) -> admin_service_pb2.ImportRiskListResponse:
    official, _ = stack.official(Role.HEALTH_AUTHORITY)
    return official.admin.ImportRiskList(
        admin_service_pb2.ImportRiskListRequest(
            request_id=rid(),
            kind=admin_service_pb2.RISK_LIST_KIND_CLOSE_CONTACT,
            id_numbers=id_numbers,
            legal_basis=LEGAL_BASIS,
            duration_days=14,
        )
    )


def entries(stack: Stack, import_id: str) -> list[tuple[str, str | None]]:
    """(id_token, subject_id) of an import's entries."""

    def read(session: Session) -> list[tuple[str, str | None]]:
        rows = session.execute(
            select(RiskListEntry.id_token, RiskListEntry.subject_id).where(
                RiskListEntry.import_id == import_id
            )
        )
        return [(t, s) for t, s in rows]

    return stack.db(read)


def id_token(stack: Stack, id_number: str) -> str | None:
    (token,) = stack.run(stack.platform.vault.lookup(FieldType.ID_NUMBER, [id_number]))
    return token


def persons_with(stack: Stack, token: str) -> list[str]:
    return stack.db(
        lambda s: list(s.execute(select(Person.id).where(Person.id_token == token)).scalars())
    )


def status_color(client: Client, subject_id: str = "") -> int:
    return client.residents.GetHealthStatus(
        resident_service_pb2.GetHealthStatusRequest(subject_id=subject_id)
    ).status.color


def register_at_gate(
    stack: Stack, staff: Client, person: people.Person
) -> checkpoint_service_pb2.RegisterByIdCardResponse:
    return staff.checkpoints.RegisterByIdCard(
        checkpoint_service_pb2.RegisterByIdCardRequest(
            request_id=rid(),
            id_card=checkpoint_service_pb2.IdCardData(
                name=person.name, id_number=person.id_number, address=person.address
            ),
            method=common_pb2.PASSAGE_METHOD_ID_PCSC,
            direction=common_pb2.PASSAGE_DIRECTION_ENTRY,
            temperature_celsius=36.5,
        )
    )


def staff_client(stack: Stack) -> Client:
    checkpoint_id = stack.checkpoint("510402", "仁和测试卡口")
    staff, _ = stack.official(Role.STAFF, division="510402", checkpoint_id=checkpoint_id)
    return staff


def test_import_counts_known_and_unknown_and_the_unknown_registers_later(
    platform_stack: Stack,
) -> None:
    stack = platform_stack
    resident, known, known_subject = stack.resident()
    assert status_color(resident) == GREEN
    unknown = people.person("510411")

    outcome = import_list(stack, [known.id_number, unknown.id_number])

    # The registered resident is matched (and red); the unknown person is reserved a subject.
    assert (outcome.matched, outcome.unmatched) == (1, 1)
    assert status_color(resident) == RED
    reserved = dict(entries(stack, outcome.import_id))
    assert reserved[id_token(stack, known.id_number) or ""] is None
    unknown_token = id_token(stack, unknown.id_number)
    assert unknown_token is not None
    reserved_id = reserved[unknown_token]
    assert reserved_id

    # A close contact can register: no PROFILE_CLAIMED, red at once, person id = reserved subject.
    client, _, subject_id = stack.resident(unknown)
    assert subject_id == reserved_id
    assert status_color(client) == RED
    assert persons_with(stack, unknown_token) == [subject_id]
    assert subject_id != known_subject

    # Erasing the person's subject erases the ID number (a throwaway person).
    stack.run(stack.platform.vault.erase([subject_id], reference="test:erasure"))
    assert id_token(stack, unknown.id_number) is None


def test_unknown_listed_person_registered_at_a_gate_is_denied(platform_stack: Stack) -> None:
    stack = platform_stack
    staff = staff_client(stack)
    listed = people.person("510402")
    outcome = import_list(stack, [listed.id_number])
    assert (outcome.matched, outcome.unmatched) == (0, 1)
    ((token, reserved_id),) = entries(stack, outcome.import_id)

    reply = register_at_gate(stack, staff, listed)

    assert reply.newly_registered
    assert reply.color == RED
    assert reply.passage.decision == common_pb2.PASSAGE_DECISION_DENY
    assert persons_with(stack, token) == [reserved_id]

    # A second pass at the gate finds the same person (a lookup, no new person).
    again = register_at_gate(stack, staff, listed)
    assert not again.newly_registered
    assert again.passage.decision == common_pb2.PASSAGE_DECISION_DENY

    # The same person later installs the app: linked to the one person, still red.
    client, _, subject_id = stack.resident(listed)
    assert subject_id == reserved_id
    assert status_color(client) == RED
    assert persons_with(stack, token) == [reserved_id]


def test_gate_then_app_links_one_person(platform_stack: Stack) -> None:
    stack = platform_stack
    staff = staff_client(stack)
    walker = people.person("510402")
    first = register_at_gate(stack, staff, walker)
    assert first.newly_registered and first.color == GREEN
    token = id_token(stack, walker.id_number)
    assert token is not None
    (gate_person,) = persons_with(stack, token)

    client, _, subject_id = stack.resident(walker)

    assert subject_id == gate_person
    assert persons_with(stack, token) == [gate_person]
    assert status_color(client) == GREEN


def test_listed_dependent_and_district_resident_take_the_reserved_id(
    platform_stack: Stack,
) -> None:
    stack = platform_stack
    dependent, managed = people.person("510402"), people.person("510402")
    outcome = import_list(stack, [dependent.id_number, managed.id_number])
    reserved = dict(entries(stack, outcome.import_id))

    guardian, _, _ = stack.resident()
    added = guardian.residents.AddDependent(
        resident_service_pb2.AddDependentRequest(
            request_id=rid(),
            identity=resident_service_pb2.PersonIdentity(
                name=dependent.name, id_number=dependent.id_number
            ),
            relationship="母亲",
            address=dependent.address,
        )
    ).dependent
    assert added.subject_id == reserved[id_token(stack, dependent.id_number) or ""]
    assert status_color(guardian, added.subject_id) == RED

    admin, _ = stack.official(Role.DISTRICT_ADMIN, division="510402")
    resident = admin.checkpoints.AddJurisdictionResident(
        checkpoint_service_pb2.AddJurisdictionResidentRequest(
            request_id=rid(),
            identity=resident_service_pb2.PersonIdentity(
                name=managed.name, id_number=managed.id_number
            ),
            phone=managed.phone,
            address=managed.address,
        )
    ).resident
    assert resident.subject_id == reserved[id_token(stack, managed.id_number) or ""]
    assert resident.color == RED


def test_listing_a_reserved_person_again_keeps_the_reservation(platform_stack: Stack) -> None:
    stack = platform_stack
    listed = people.person("510421")
    first = import_list(stack, [listed.id_number])
    second = import_list(stack, [listed.id_number])
    assert (second.matched, second.unmatched) == (0, 1)
    assert entries(stack, first.import_id) == entries(stack, second.import_id)


def test_retention_erases_reservations_of_people_who_never_registered(
    platform_stack: Stack,
) -> None:
    stack = platform_stack
    staff = staff_client(stack)
    never, registered = people.person("510422"), people.person("510422")
    outcome = import_list(stack, [never.id_number, registered.id_number])
    register_at_gate(stack, staff, registered)
    registered_token = id_token(stack, registered.id_number)
    assert registered_token is not None
    # Also listed, still unexpired, by a later import: must survive the first import's expiry.
    still_listed = people.person("510422")
    first_of_two = import_list(stack, [still_listed.id_number])
    import_list(stack, [still_listed.id_number])

    past = utcnow() - dt.timedelta(days=1)

    def expire(session: Session) -> None:
        session.execute(
            update(RiskListEntry)
            .where(RiskListEntry.import_id.in_([outcome.import_id, first_of_two.import_id]))
            .values(expires_at=past)
        )

    stack.db(expire)
    stack.db(purge_expired, stack.platform.settings)
    erased = stack.run(erase_expired_reservations(stack.platform))

    assert erased == 1
    assert id_token(stack, never.id_number) is None
    # The reserved subject that became a person keeps its data; its expired entry is purged.
    assert id_token(stack, registered.id_number) == registered_token
    assert persons_with(stack, registered_token)
    assert entries(stack, outcome.import_id) == []
    # Listed again (unexpired): nothing erased, the expired entry waits.
    assert id_token(stack, still_listed.id_number) is not None
    assert len(entries(stack, first_of_two.import_id)) == 1
    assert stack.run(erase_expired_reservations(stack.platform)) == 0

    # The never-registered person can register afresh once the reservation is gone.
    client, _, _ = stack.resident(never)
    assert status_color(client) == GREEN
