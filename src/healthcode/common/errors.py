"""Turning domain failures into rich gRPC statuses.

Every error a client can cause leaves the process as a ``google.rpc.Status`` whose details carry an
``ErrorInfo`` (stable UPPER_SNAKE ``reason``, ``domain`` = the service) and, for bad input, a
``BadRequest`` with one ``FieldViolation`` per field at fault. Messages never contain personal data:
they name fields and rules, never values.

Exception hierarchy::

    ServiceError                      (code, reason, message)
     ├── InvalidArgument              INVALID_ARGUMENT + BadRequest field violations
     ├── NotFound                     NOT_FOUND
     ├── AlreadyExists                ALREADY_EXISTS
     ├── PermissionDenied             PERMISSION_DENIED
     ├── Unauthenticated              UNAUTHENTICATED
     ├── FailedPrecondition           FAILED_PRECONDITION
     ├── ResourceExhausted            RESOURCE_EXHAUSTED (rate limits)
     └── Unavailable                  UNAVAILABLE (a dependency is down)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status


@dataclass(frozen=True)
class FieldViolation:
    """One field at fault: its path in the request (``profile.id_number``) and the broken rule."""

    field: str
    description: str


@dataclass
class ServiceError(Exception):
    """A failure a client can see: carries the gRPC code, a stable reason and a PII-free message."""

    code: grpc.StatusCode
    reason: str
    message: str
    domain: str = "healthcode"
    metadata: Mapping[str, str] = field(default_factory=dict)
    violations: tuple[FieldViolation, ...] = ()

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def to_status(self) -> status_pb2.Status:
        """Build the ``google.rpc.Status`` sent to the client."""
        details: list[any_pb2.Any] = []
        info = error_details_pb2.ErrorInfo(
            reason=self.reason, domain=self.domain, metadata=dict(self.metadata)
        )
        packed = any_pb2.Any()
        packed.Pack(info)
        details.append(packed)
        if self.violations:
            bad = error_details_pb2.BadRequest(
                field_violations=[
                    error_details_pb2.BadRequest.FieldViolation(
                        field=v.field, description=v.description
                    )
                    for v in self.violations
                ]
            )
            packed_bad = any_pb2.Any()
            packed_bad.Pack(bad)
            details.append(packed_bad)
        return status_pb2.Status(
            code=_GRPC_TO_RPC[self.code], message=self.message, details=details
        )

    def to_grpc_status(self) -> grpc.Status:
        """Convert for ``context.abort_with_status``."""
        status: grpc.Status = rpc_status.to_status(self.to_status())
        return status


def _error(code: grpc.StatusCode) -> type[ServiceError]:
    class _Specific(ServiceError):
        def __init__(
            self,
            reason: str,
            message: str,
            *,
            domain: str = "healthcode",
            metadata: Mapping[str, str] | None = None,
            violations: Iterable[FieldViolation] = (),
        ) -> None:
            super().__init__(
                code=code,
                reason=reason,
                message=message,
                domain=domain,
                metadata=dict(metadata or {}),
                violations=tuple(violations),
            )

    return _Specific


class InvalidArgument(_error(grpc.StatusCode.INVALID_ARGUMENT)):  # type: ignore[misc]
    """The request is malformed; ``violations`` names every field at fault."""


class NotFound(_error(grpc.StatusCode.NOT_FOUND)):  # type: ignore[misc]
    """The named resource does not exist (or the caller may not know that it does)."""


class AlreadyExists(_error(grpc.StatusCode.ALREADY_EXISTS)):  # type: ignore[misc]
    """The resource exists already."""


class PermissionDenied(_error(grpc.StatusCode.PERMISSION_DENIED)):  # type: ignore[misc]
    """The caller is known but its role, scope or jurisdiction does not allow this."""


class Unauthenticated(_error(grpc.StatusCode.UNAUTHENTICATED)):  # type: ignore[misc]
    """No valid credential came with the call."""


class FailedPrecondition(_error(grpc.StatusCode.FAILED_PRECONDITION)):  # type: ignore[misc]
    """The system is not in a state that allows this call (e.g. profile not yet registered)."""


class ResourceExhausted(_error(grpc.StatusCode.RESOURCE_EXHAUSTED)):  # type: ignore[misc]
    """A rate limit or quota was hit; retry later."""


class Unavailable(_error(grpc.StatusCode.UNAVAILABLE)):  # type: ignore[misc]
    """A dependency (vault, key backend, database) cannot be reached; retry later."""


def invalid(
    field_path: str,
    description: str,
    reason: str = "INVALID_ARGUMENT",
    *,
    domain: str = "healthcode",
) -> InvalidArgument:
    """Shorthand for a single-field INVALID_ARGUMENT error."""
    return InvalidArgument(
        reason,
        f"invalid {field_path}: {description}",
        domain=domain,
        violations=[FieldViolation(field_path, description)],
    )


_GRPC_TO_RPC: dict[grpc.StatusCode, int] = {
    grpc.StatusCode.OK: code_pb2.OK,
    grpc.StatusCode.CANCELLED: code_pb2.CANCELLED,
    grpc.StatusCode.UNKNOWN: code_pb2.UNKNOWN,
    grpc.StatusCode.INVALID_ARGUMENT: code_pb2.INVALID_ARGUMENT,
    grpc.StatusCode.DEADLINE_EXCEEDED: code_pb2.DEADLINE_EXCEEDED,
    grpc.StatusCode.NOT_FOUND: code_pb2.NOT_FOUND,
    grpc.StatusCode.ALREADY_EXISTS: code_pb2.ALREADY_EXISTS,
    grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
    grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
    grpc.StatusCode.FAILED_PRECONDITION: code_pb2.FAILED_PRECONDITION,
    grpc.StatusCode.ABORTED: code_pb2.ABORTED,
    grpc.StatusCode.OUT_OF_RANGE: code_pb2.OUT_OF_RANGE,
    grpc.StatusCode.UNIMPLEMENTED: code_pb2.UNIMPLEMENTED,
    grpc.StatusCode.INTERNAL: code_pb2.INTERNAL,
    grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE,
    grpc.StatusCode.DATA_LOSS: code_pb2.DATA_LOSS,
    grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
}


def error_info(err: grpc.RpcError) -> error_details_pb2.ErrorInfo | None:
    """Read the ErrorInfo detail of a received error (tests and clients use it)."""
    status = rpc_status.from_call(err)
    if status is None:
        return None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return info
    return None


def field_violations(err: grpc.RpcError) -> list[str]:
    """The field paths named by a received INVALID_ARGUMENT error."""
    status = rpc_status.from_call(err)
    if status is None:
        return []
    fields: list[str] = []
    for detail in status.details:
        if detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            fields.extend(v.field for v in bad.field_violations)
    return fields
