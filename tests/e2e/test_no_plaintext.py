"""Register people through every entry point of the server, then search the server's database, the
vault's database and every log for their plaintext values (raw, hex, base64, UTF-16): nothing."""

from __future__ import annotations

import logging

from healthcode_sdk._gen.healthcode.v1 import (
    checkpoint_service_pb2,
    common_pb2,
    resident_service_pb2,
)

from healthcode.server.common.principal import Role
from tests.fixtures import people
from tests.fixtures.pii_sweep import find_pii
from tests.fixtures.platform import Stack, collect_blobs


def test_registered_people_leave_no_plaintext_anywhere(platform_stack: Stack) -> None:
    stack = platform_stack
    logging.getLogger("healthcode").setLevel(logging.DEBUG)
    everyone: list[people.Person] = []
    for _ in range(3):
        client, person, _ = stack.resident()
        everyone.append(person)
        dependent = people.person()
        everyone.append(dependent)
        client.residents.AddDependent(
            resident_service_pb2.AddDependentRequest(
                request_id=f"dep-{dependent.id_number[-6:]}",
                identity=resident_service_pb2.PersonIdentity(
                    name=dependent.name, id_number=dependent.id_number
                ),
                relationship="母亲",
                address=dependent.address,
            )
        )
    checkpoint = stack.checkpoint("510402")
    staff, _ = stack.official(Role.STAFF, division="510402", checkpoint_id=checkpoint)
    walk_in = people.person()
    everyone.append(walk_in)
    staff.checkpoints.RegisterByIdCard(
        checkpoint_service_pb2.RegisterByIdCardRequest(
            request_id="walk-in-1",
            id_card=checkpoint_service_pb2.IdCardData(
                name=walk_in.name, id_number=walk_in.id_number, address=walk_in.address
            ),
            method=common_pb2.PASSAGE_METHOD_ID_PCSC,
        )
    )
    managed = people.person()
    everyone.append(managed)
    staff.checkpoints.AddJurisdictionResident(
        checkpoint_service_pb2.AddJurisdictionResidentRequest(
            request_id="managed-1",
            identity=resident_service_pb2.PersonIdentity(
                name=managed.name, id_number=managed.id_number
            ),
            phone=managed.phone,
            address=managed.address,
        )
    )
    values = {v for p in everyone for v in (p.name, p.id_number, p.phone, p.address)}
    blobs = collect_blobs(stack.home, stack.database_urls)
    assert any(label.endswith(".log") for label in blobs), "the logs were not searched"
    assert any("sqlite3" in label or label.startswith("postgres:") for label in blobs)
    assert find_pii(blobs, values) == []
    # The search itself works on these very files: a planted value is found.
    planted = {**blobs, "planted": b"..." + everyone[0].id_number.encode("utf-16-le") + b"..."}
    assert find_pii(planted, values) == ["planted (form #5)"]
