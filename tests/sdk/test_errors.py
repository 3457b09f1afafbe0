"""google.rpc.Status -> typed exceptions, without a server (the client tests cover real calls)."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from healthcode_sdk import errors


def _status(
    code: int,
    reason: str = "",
    *,
    message: str = "boom",
    metadata: dict[str, str] | None = None,
    violations: tuple[tuple[str, str], ...] = (),
) -> status_pb2.Status:
    details = []
    if reason:
        info = any_pb2.Any()
        info.Pack(
            error_details_pb2.ErrorInfo(reason=reason, domain="healthcode", metadata=metadata)
        )
        details.append(info)
    if violations:
        bad = any_pb2.Any()
        bad.Pack(
            error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(field=f, description=d)
                    for f, d in violations
                ]
            )
        )
        details.append(bad)
    return status_pb2.Status(code=code, message=message, details=details)


@pytest.mark.parametrize(
    ("code", "reason", "cls"),
    [
        (code_pb2.INVALID_ARGUMENT, "INVALID_ARGUMENT", errors.InvalidArgument),
        (code_pb2.INVALID_ARGUMENT, "CODE_EXPIRED", errors.CodeRejected),
        (code_pb2.NOT_FOUND, "CODE_NOT_FOUND", errors.NotFound),
        (code_pb2.ALREADY_EXISTS, "X", errors.AlreadyExists),
        (code_pb2.PERMISSION_DENIED, "X", errors.PermissionDenied),
        (code_pb2.UNAUTHENTICATED, "X", errors.Unauthenticated),
        (code_pb2.FAILED_PRECONDITION, "PROFILE_REQUIRED", errors.FailedPrecondition),
        (code_pb2.RESOURCE_EXHAUSTED, "X", errors.RateLimited),
        (code_pb2.UNAVAILABLE, "VAULT_UNAVAILABLE", errors.Unavailable),
        (code_pb2.DEADLINE_EXCEEDED, "", errors.DeadlineExceeded),
        (code_pb2.INTERNAL, "", errors.ServerError),
        (code_pb2.UNKNOWN, "", errors.ServerError),
        (code_pb2.CANCELLED, "", errors.HealthCodeError),
    ],
)
def test_status_maps_to_class(code: int, reason: str, cls: type[errors.HealthCodeError]) -> None:
    err = errors.from_status(_status(code, reason))
    assert type(err) is cls
    assert err.code.value[0] == code
    assert err.reason == reason
    assert err.message == "boom"


def test_details_are_exposed() -> None:
    err = errors.from_status(
        _status(
            code_pb2.INVALID_ARGUMENT,
            "CODE_BAD_BASE45",
            message="invalid code: not base45",
            metadata={"k": "v"},
            violations=(("code", "not base45"), ("direction", "bad")),
        )
    )
    assert isinstance(err, errors.CodeRejected)
    assert isinstance(err, errors.InvalidArgument)
    assert err.domain == "healthcode"
    assert err.metadata == {"k": "v"}
    assert err.field_violations == [("code", "not base45"), ("direction", "bad")]
    assert str(err) == "INVALID_ARGUMENT CODE_BAD_BASE45: invalid code: not base45"


@pytest.mark.parametrize(
    ("raw", "seconds"), [("17", 17.0), ("0.5", 0.5), ("soon", None), ("-1", None)]
)
def test_retry_after(raw: str, seconds: float | None) -> None:
    err = errors.from_status(
        _status(
            code_pb2.RESOURCE_EXHAUSTED,
            "LOGIN_CODE_RESEND_TOO_SOON",
            metadata={"retry_after_s": raw},
        )
    )
    assert isinstance(err, errors.RateLimited)
    assert err.retry_after == seconds
    assert errors.RateLimited("x").retry_after is None


def test_default_codes() -> None:
    assert errors.RateLimited("x").code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert errors.CodeRejected("x", reason="CODE_EXPIRED").code == grpc.StatusCode.INVALID_ARGUMENT
    assert errors.HealthCodeError("x").code == grpc.StatusCode.UNKNOWN
    assert (
        repr(errors.NotFound("gone", reason="R"))
        == "NotFound(code=NOT_FOUND, reason='R', message='gone')"
    )


def test_plain_rpc_error_without_a_call() -> None:
    err = errors.from_rpc_error(grpc.RpcError())
    assert type(err) is errors.ServerError
    assert err.code == grpc.StatusCode.UNKNOWN
    assert err.reason == ""
