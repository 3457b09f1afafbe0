"""Helpers of the residents tests: logged-in residents, request builders, error assertions."""

from __future__ import annotations

import uuid
from typing import Any

import grpc
import pytest
from healthcode_sdk._gen.healthcode.v1 import resident_service_pb2 as pb

from healthcode.common.errors import error_info
from tests.fixtures import people
from tests.server.auth.stack import Stack, bearer

Meta = tuple[tuple[str, str], ...]


def rid() -> str:
    """A fresh request id."""
    return uuid.uuid4().hex


def register_request(person: people.Person, **overrides: Any) -> pb.RegisterProfileRequest:
    """A valid RegisterProfile request for ``person``."""
    fields: dict[str, Any] = {
        "request_id": rid(),
        "identity": pb.PersonIdentity(name=person.name, id_number=person.id_number),
        "division_code": person.division_code,
        "address": person.address,
    }
    fields.update(overrides)
    return pb.RegisterProfileRequest(**fields)


async def logged_in(stack: Stack, person: people.Person | None = None) -> tuple[Meta, str]:
    """A logged-in resident without a profile: (metadata, account id)."""
    person = person or people.person()
    login = await stack.login(person.phone)
    return bearer(login.access_token), login.account_id


async def registered(
    stack: Stack, person: people.Person | None = None
) -> tuple[Meta, people.Person, str]:
    """A logged-in resident with a profile: (metadata, person, subject id)."""
    person = person or people.person()
    meta, _account = await logged_in(stack, person)
    reply = await stack.residents.RegisterProfile(register_request(person), metadata=meta)
    return meta, person, reply.profile.subject_id


async def expect(call: Any, code: grpc.StatusCode, reason: str) -> grpc.aio.AioRpcError:
    """Await ``call`` and check the status code and ErrorInfo reason of its failure."""
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == code, (caught.value.code(), caught.value.details())
    info = error_info(caught.value)
    assert info is not None
    assert info.reason == reason, info.reason
    return caught.value
