"""Retries are declared for exactly the idempotent methods, derived from the proto descriptors."""

from __future__ import annotations

import json

import pytest
from google.protobuf import descriptor_pb2
from healthcode_sdk import config
from healthcode_sdk._gen.healthcode.v1 import (
    admin_service_pb2,
    auth_service_pb2,
    checkpoint_service_pb2,
    code_service_pb2,
    resident_service_pb2,
    verification_service_pb2,
)

MODULES = (
    admin_service_pb2,
    auth_service_pb2,
    checkpoint_service_pb2,
    code_service_pb2,
    resident_service_pb2,
    verification_service_pb2,
)
SAFE_LEVELS = {
    descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS,
    descriptor_pb2.MethodOptions.IDEMPOTENT,
}


def _all_methods() -> dict[str, tuple[int, set[str], bool]]:
    """path -> (idempotency level, request field names, client streaming), read independently."""
    out = {}
    for module in MODULES:
        for service in module.DESCRIPTOR.services_by_name.values():
            for method in service.methods:
                out[f"/{service.full_name}/{method.name}"] = (
                    method.GetOptions().idempotency_level,
                    {f.name for f in method.input_type.fields},
                    method.client_streaming,
                )
    return out


def test_retried_methods_are_exactly_the_idempotent_ones() -> None:
    methods = _all_methods()
    expected = {
        path
        for path, (level, fields, streaming) in methods.items()
        if not streaming and (level in SAFE_LEVELS or "request_id" in fields)
    }
    assert set(config.idempotent_methods()) == expected
    assert list(config.idempotent_methods()) == sorted(expected)
    # Every platform service is covered: the list is not vacuously right.
    assert {p.split("/")[1] for p in methods} == {
        f"healthcode.v1.{s}"
        for s in (
            "AdminService",
            "AuthService",
            "CheckpointService",
            "CodeService",
            "ResidentService",
            "VerificationService",
        )
    }


@pytest.mark.parametrize(
    ("path", "retried"),
    [
        ("/healthcode.v1.VerificationService/GetTrustList", True),  # NO_SIDE_EFFECTS
        ("/healthcode.v1.VerificationService/BatchVerifyCodes", True),
        ("/healthcode.v1.ResidentService/ListMyPassages", True),
        ("/healthcode.v1.VerificationService/VerifyCode", True),  # write with request_id
        ("/healthcode.v1.ResidentService/RegisterProfile", True),
        ("/healthcode.v1.CodeService/IssueOfflineCode", True),
        ("/healthcode.v1.AuthService/Login", False),  # consumes the SMS code
        ("/healthcode.v1.AuthService/SendLoginCode", False),  # sends an SMS
        ("/healthcode.v1.CodeService/IssueCode", False),  # a new code per call
        ("/healthcode.v1.AdminService/ReviewStatusChange", False),
        ("/healthcode.v1.CheckpointService/StreamScans", False),  # client streaming
    ],
)
def test_known_methods(path: str, retried: bool) -> None:
    assert (path in config.idempotent_methods()) is retried


def test_request_id_methods_are_the_retry_safe_writes() -> None:
    methods = _all_methods()
    assert config.request_id_methods() == {
        path
        for path, (_, fields, streaming) in methods.items()
        if "request_id" in fields and not streaming
    }
    assert config.request_id_methods() <= set(config.idempotent_methods())


def test_service_config_json() -> None:
    parsed = json.loads(config.service_config_json())
    [method_config] = parsed["methodConfig"]
    names = {f"/{n['service']}/{n['method']}" for n in method_config["name"]}
    assert names == set(config.idempotent_methods())
    assert method_config["retryPolicy"] == {
        "maxAttempts": 4,
        "initialBackoff": "0.1s",
        "maxBackoff": "2s",
        "backoffMultiplier": 2.0,
        "retryableStatusCodes": ["UNAVAILABLE"],
    }
    assert "timeout" not in method_config  # deadlines are per call, set by the client
    assert json.loads(config.service_config_json(None)) == {"methodConfig": []}


def test_channel_options_let_the_caller_win() -> None:
    options = dict(config.channel_options(options=[("grpc.enable_retries", 0), ("x.y", 1)]))
    assert options["grpc.enable_retries"] == 0
    assert options["x.y"] == 1
    assert json.loads(options["grpc.service_config"])["methodConfig"]
    assert dict(config.channel_options(None))["grpc.enable_retries"] == 0


@pytest.mark.parametrize(
    "kwargs",
    [
        {"max_attempts": 1},
        {"max_attempts": 6},
        {"initial_backoff": 0},
        {"initial_backoff": 3.0, "max_backoff": 2.0},
        {"backoff_multiplier": 0},
        {"retryable_status_codes": ()},
    ],
)
def test_retry_policy_rejects_nonsense(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValueError, match=r"."):
        config.RetryPolicy(**kwargs)  # type: ignore[arg-type]
