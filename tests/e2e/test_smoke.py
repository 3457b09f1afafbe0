"""Smoke: the stack starts, health and reflection answer, a resident logs in and registers."""

from __future__ import annotations

from grpc_health.v1 import health_pb2, health_pb2_grpc
from healthcode_sdk._gen.healthcode.v1 import auth_service_pb2, resident_service_pb2

from tests.fixtures.platform import Stack


def test_health_and_resident_registration(platform_stack: Stack) -> None:
    health = health_pb2_grpc.HealthStub(platform_stack.client().channel)
    assert (
        health.Check(health_pb2.HealthCheckRequest()).status
        == health_pb2.HealthCheckResponse.SERVING
    )
    client, person, subject_id = platform_stack.resident()
    session = client.auth.GetSession(auth_service_pb2.GetSessionRequest())
    assert session.masked_phone == person.phone[:3] + "****" + person.phone[-4:]
    profile = client.residents.GetProfile(resident_service_pb2.GetProfileRequest()).profile
    assert profile.subject_id == subject_id
    assert profile.identity.masked_name == person.name[0] + "*" * (len(person.name) - 1)
    assert (
        profile.identity.masked_id_number == person.id_number[0] + "*" * 15 + person.id_number[-2:]
    )
