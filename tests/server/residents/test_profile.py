"""RegisterProfile, GetProfile, dependents and subject resolution over real gRPC, with a real
vault, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio

import grpc
from healthcode_sdk._gen.healthcode.v1 import common_pb2
from healthcode_sdk._gen.healthcode.v1 import resident_service_pb2 as pb
from sqlalchemy import select
from sqlalchemy.orm import Session

from healthcode.common.errors import field_violations
from healthcode.common.identity import check_character
from healthcode.server.db.models import Account, IdempotencyRecord, Person
from healthcode.vault.client import TokenizeItem
from healthcode.vault.fields import FieldType
from tests.fixtures import people
from tests.server.auth.stack import Stack
from tests.server.residents.helpers import expect, logged_in, register_request, registered, rid


def _bad_check_digit(id_number: str) -> str:
    good = check_character(id_number[:17])
    return id_number[:17] + ("0" if good != "0" else "1")


async def test_register_profile_stores_tokens_and_masks(stack: Stack) -> None:
    person = people.person("510403")
    meta, account_id = await logged_in(stack, person)
    reply = await stack.residents.RegisterProfile(register_request(person), metadata=meta)
    profile = reply.profile
    assert profile.subject_id
    assert profile.identity.masked_name == person.name[0] + "*" * (len(person.name) - 1)
    assert profile.identity.masked_id_number == (
        person.id_number[0] + "*" * 15 + person.id_number[-2:]
    )
    assert profile.identity.masked_phone == f"{person.phone[:3]}****{person.phone[-4:]}"
    assert profile.division_code == "510403"
    assert profile.masked_address.startswith(person.address[:6])
    assert person.address not in profile.masked_address

    got = await stack.residents.GetProfile(pb.GetProfileRequest(), metadata=meta)
    assert got.profile == profile

    def rows(s: Session) -> tuple[list[Person], Account | None]:
        return list(s.scalars(select(Person))), s.get(Account, account_id)

    persons, account = await stack.db.run(rows)
    assert len(persons) == 1
    row = persons[0]
    assert account is not None and account.person_id == row.id == profile.subject_id
    assert row.id_token.startswith("idn_") and row.name_token.startswith("nam_")
    assert row.address_token is not None and row.address_token.startswith("adr_")
    assert row.phone_token == account.phone_token
    assert row.guardian_account_id == account_id and not row.managed
    assert row.id_type == "RESIDENT"
    assert row.color == 1

    status = await stack.residents.GetHealthStatus(pb.GetHealthStatusRequest(), metadata=meta)
    assert status.status.subject_id == profile.subject_id
    assert status.status.color == common_pb2.CODE_COLOR_GREEN


async def test_register_profile_names_every_bad_field(stack: Stack) -> None:
    person = people.person()
    meta, _ = await logged_in(stack, person)
    err = await expect(
        stack.residents.RegisterProfile(
            pb.RegisterProfileRequest(
                request_id="bad id with spaces",
                identity=pb.PersonIdentity(name="", id_number=_bad_check_digit(person.id_number)),
                division_code="51040",
                address="",
            ),
            metadata=meta,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert sorted(field_violations(err)) == sorted(
        ["request_id", "identity.name", "identity.id_number", "division_code", "address"]
    )
    assert person.id_number not in (err.details() or "")
    err = await expect(
        stack.residents.RegisterProfile(
            register_request(
                person,
                identity=pb.PersonIdentity(
                    name=person.name,
                    id_number=person.id_number,
                    id_type=common_pb2.ID_DOCUMENT_TYPE_HMT_PERMIT,
                ),
            ),
            metadata=meta,
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert field_violations(err) == ["identity.id_type"]
    err = await expect(
        stack.residents.RegisterProfile(register_request(person, address="x" * 201), metadata=meta),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert field_violations(err) == ["address"]
    assert await stack.count(Person) == 0
    assert await stack.count(IdempotencyRecord) == 0


async def test_register_profile_is_idempotent(stack: Stack) -> None:
    person = people.person()
    meta, _ = await logged_in(stack, person)
    request = register_request(person)
    first = await stack.residents.RegisterProfile(request, metadata=meta)
    again = await stack.residents.RegisterProfile(request, metadata=meta)
    assert again == first
    assert await stack.count(Person) == 1
    changed = register_request(person, request_id=request.request_id, address="攀枝花市别处1号")
    await expect(
        stack.residents.RegisterProfile(changed, metadata=meta),
        grpc.StatusCode.FAILED_PRECONDITION,
        "REQUEST_ID_REUSED",
    )
    await expect(
        stack.residents.RegisterProfile(register_request(person), metadata=meta),
        grpc.StatusCode.ALREADY_EXISTS,
        "PROFILE_EXISTS",
    )
    assert await stack.count(Person) == 1


async def test_identity_of_another_account_is_refused(stack: Stack) -> None:
    _meta, person, _subject = await registered(stack)
    intruder = people.person()
    meta2, _ = await logged_in(stack, intruder)
    stolen = people.Person(
        intruder.name, person.id_number, intruder.phone, intruder.address, "510402"
    )
    err = await expect(
        stack.residents.RegisterProfile(register_request(stolen), metadata=meta2),
        grpc.StatusCode.ALREADY_EXISTS,
        "PROFILE_CLAIMED",
    )
    assert person.id_number not in (err.details() or "")
    assert await stack.count(Person) == 1


async def test_gate_registered_person_is_linked_not_duplicated(stack: Stack) -> None:
    person = people.person("510411")
    subject = "gate" + rid()[:20]
    results = await stack.platform.vault.tokenize(
        [
            TokenizeItem(FieldType.ID_NUMBER, person.id_number, subject),
            TokenizeItem(FieldType.NAME, person.name, subject),
        ]
    )

    def add_managed(s: Session) -> None:
        s.add(
            Person(
                id=subject,
                id_token=results[0].token,
                name_token=results[1].token,
                id_type="RESIDENT",
                masked_name=results[1].masked,
                masked_id_number=results[0].masked,
                division_code="510411",
                managed=True,
            )
        )

    await stack.db.run(add_managed)
    meta, account_id = await logged_in(stack, person)
    reply = await stack.residents.RegisterProfile(register_request(person), metadata=meta)
    assert reply.profile.subject_id == subject
    row = await stack.db.run(lambda s: s.get(Person, subject))
    assert row.guardian_account_id == account_id and not row.managed
    assert row.address_token is not None
    assert await stack.count(Person) == 1


async def test_profile_required(stack: Stack) -> None:
    meta, _ = await logged_in(stack)
    for call in (
        stack.residents.GetProfile(pb.GetProfileRequest(), metadata=meta),
        stack.residents.GetHealthStatus(pb.GetHealthStatusRequest(), metadata=meta),
        stack.residents.SubmitHealthDeclaration(
            pb.SubmitHealthDeclarationRequest(request_id=rid(), temperature_celsius=36.5),
            metadata=meta,
        ),
        stack.residents.ListMyPassages(pb.ListMyPassagesRequest(), metadata=meta),
        stack.residents.AddDependent(
            pb.AddDependentRequest(
                identity=pb.PersonIdentity(name="测试甲", id_number=people.id_number()),
                relationship="父亲",
            ),
            metadata=meta,
        ),
    ):
        await expect(call, grpc.StatusCode.FAILED_PRECONDITION, "PROFILE_REQUIRED")
    assert await stack.count(Person) == 0


def _dependent_request(dep: people.Person, relationship: str = "父亲") -> pb.AddDependentRequest:
    return pb.AddDependentRequest(
        request_id=rid(),
        identity=pb.PersonIdentity(name=dep.name, id_number=dep.id_number),
        relationship=relationship,
    )


async def test_dependents_limit_listing_and_subjects(stack: Stack) -> None:
    meta, me, own_subject = await registered(stack)
    err = await expect(
        stack.residents.AddDependent(
            _dependent_request(people.person(), relationship="x" * 17), metadata=meta
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "INVALID_ARGUMENT",
    )
    assert field_violations(err) == ["relationship"]
    added = []
    for _ in range(5):
        reply = await stack.residents.AddDependent(
            _dependent_request(people.person()), metadata=meta
        )
        added.append(reply.dependent)
    assert all(d.division_code == me.division_code for d in added)
    await expect(
        stack.residents.AddDependent(_dependent_request(people.person()), metadata=meta),
        grpc.StatusCode.FAILED_PRECONDITION,
        "DEPENDENT_LIMIT",
    )
    listed = await stack.residents.ListDependents(pb.ListDependentsRequest(), metadata=meta)
    assert {d.subject_id for d in listed.dependents} == {d.subject_id for d in added}
    assert own_subject not in {d.subject_id for d in listed.dependents}
    assert await stack.count(Person) == 6

    # A dependent's subject_id works for its guardian ...
    status = await stack.residents.GetHealthStatus(
        pb.GetHealthStatusRequest(subject_id=added[0].subject_id), metadata=meta
    )
    assert status.status.subject_id == added[0].subject_id
    # ... and is NOT_FOUND, exactly like an unknown id, for anyone else.
    other, _p, _s = await registered(stack)
    e1 = await expect(
        stack.residents.GetHealthStatus(
            pb.GetHealthStatusRequest(subject_id=added[0].subject_id), metadata=other
        ),
        grpc.StatusCode.NOT_FOUND,
        "SUBJECT_NOT_FOUND",
    )
    e2 = await expect(
        stack.residents.GetHealthStatus(
            pb.GetHealthStatusRequest(subject_id="0" * 32), metadata=other
        ),
        grpc.StatusCode.NOT_FOUND,
        "SUBJECT_NOT_FOUND",
    )
    assert e1.details() == e2.details()


async def test_dependent_of_another_account_is_refused(stack: Stack) -> None:
    meta1, _p1, _s1 = await registered(stack)
    dep = people.person()
    await stack.residents.AddDependent(_dependent_request(dep), metadata=meta1)
    meta2, _p2, _s2 = await registered(stack)
    await expect(
        stack.residents.AddDependent(_dependent_request(dep), metadata=meta2),
        grpc.StatusCode.ALREADY_EXISTS,
        "PROFILE_CLAIMED",
    )
    await expect(
        stack.residents.AddDependent(_dependent_request(dep), metadata=meta1),
        grpc.StatusCode.ALREADY_EXISTS,
        "DEPENDENT_EXISTS",
    )
    assert await stack.count(Person) == 3


async def test_add_dependent_is_idempotent(stack: Stack) -> None:
    meta, _p, _s = await registered(stack)
    request = _dependent_request(people.person())
    first = await stack.residents.AddDependent(request, metadata=meta)
    again = await stack.residents.AddDependent(request, metadata=meta)
    assert first == again
    assert await stack.count(Person) == 2


async def test_concurrent_retries_register_once(stack: Stack) -> None:
    person = people.person()
    meta, _ = await logged_in(stack, person)
    request = register_request(person)
    replies = await asyncio.gather(
        *(stack.residents.RegisterProfile(request, metadata=meta) for _ in range(4))
    )
    assert all(r == replies[0] for r in replies)
    assert await stack.count(Person) == 1


async def test_concurrent_retries_add_a_dependent_once(stack: Stack) -> None:
    meta, _me, _subject = await registered(stack)
    request = _dependent_request(people.person())
    replies = await asyncio.gather(
        *(stack.residents.AddDependent(request, metadata=meta) for _ in range(4))
    )
    assert all(r == replies[0] for r in replies)
    assert await stack.count(Person) == 2
