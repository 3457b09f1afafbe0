"""Typed exceptions for every failure the platform reports.

The server answers errors with a ``google.rpc.Status`` whose details carry an ``ErrorInfo`` (a
stable UPPER_SNAKE ``reason``, the ``domain`` and string ``metadata``) and, for bad input, a
``BadRequest`` naming each field at fault. :func:`from_rpc_error` turns a raw ``grpc.RpcError``
(sync or ``grpc.aio``) into one of the classes below, so callers never parse status details and
never see a raw ``grpc.RpcError`` from :class:`~healthcode_sdk.HealthCodeClient`.

Exception hierarchy::

    HealthCodeError                   any failed call: .code .reason .domain .metadata
     │                                .field_violations .message; CANCELLED, ABORTED
     │
     ├── InvalidArgument              INVALID_ARGUMENT, OUT_OF_RANGE: .field_violations names
     │    │                           every field at fault
     │    └── CodeRejected            a health code was refused; .reason is the class
     │                                (CODE_BAD_PREFIX, CODE_BAD_BASE45, CODE_EXPIRED, ...)
     ├── NotFound                     NOT_FOUND (also CODE_NOT_FOUND: a well-signed code the
     │                                platform never issued)
     ├── AlreadyExists                ALREADY_EXISTS
     ├── PermissionDenied             PERMISSION_DENIED: role, checkpoint or jurisdiction
     ├── Unauthenticated              UNAUTHENTICATED: no token, or an expired one
     ├── FailedPrecondition           FAILED_PRECONDITION (e.g. profile not registered yet)
     ├── RateLimited                  RESOURCE_EXHAUSTED: .retry_after seconds (or None)
     ├── Unavailable                  UNAVAILABLE: server or a dependency down (already retried
     │                                for idempotent calls)
     ├── DeadlineExceeded             DEADLINE_EXCEEDED: the per-call deadline passed
     └── ServerError                  INTERNAL, UNKNOWN, DATA_LOSS, UNIMPLEMENTED: a platform bug

Messages and metadata from the platform never contain personal data, so these exceptions are safe
to log.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, ClassVar

import grpc
from google.protobuf.message import DecodeError

# googleapis-common-protos ships no type information; stubs may be installed in some environments.
from google.rpc import error_details_pb2, status_pb2  # type: ignore[import-untyped,unused-ignore]
from grpc_status import rpc_status

#: Trailing metadata key that carries the serialized ``google.rpc.Status``.
STATUS_DETAILS_KEY = "grpc-status-details-bin"
#: ``ErrorInfo.metadata`` key with the seconds a rate-limited caller should wait.
RETRY_AFTER_KEY = "retry_after_s"
#: Reasons of rejected health codes start with this prefix.
CODE_REASON_PREFIX = "CODE_"

_CODE_BY_VALUE: dict[int, grpc.StatusCode] = {code.value[0]: code for code in grpc.StatusCode}


class HealthCodeError(Exception):
    """A call to the platform failed.

    Attributes:
        code: The gRPC status code.
        reason: The stable ``ErrorInfo`` reason (UPPER_SNAKE), or "" if the server sent none
            (for example when the channel failed before reaching the server).
        domain: The ``ErrorInfo`` domain (the service that failed), or "".
        metadata: The ``ErrorInfo`` metadata (string pairs, never personal data).
        field_violations: ``(field path, description)`` for each field at fault.
        message: The status message (PII-free).
    """

    #: The status code a class stands for (informative; ``code`` holds the received one).
    default_code: ClassVar[grpc.StatusCode] = grpc.StatusCode.UNKNOWN

    def __init__(
        self,
        message: str,
        *,
        code: grpc.StatusCode | None = None,
        reason: str = "",
        domain: str = "",
        metadata: Mapping[str, str] | None = None,
        field_violations: Iterable[tuple[str, str]] = (),
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code: grpc.StatusCode = code if code is not None else self.default_code
        self.reason = reason
        self.domain = domain
        self.metadata: dict[str, str] = dict(metadata or {})
        self.field_violations: list[tuple[str, str]] = list(field_violations)

    def __str__(self) -> str:
        label = f"{self.code.name} {self.reason}" if self.reason else self.code.name
        return f"{label}: {self.message}" if self.message else label

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code.name}, reason={self.reason!r}, "
            f"message={self.message!r})"
        )


class InvalidArgument(HealthCodeError):
    """The request was malformed; ``field_violations`` names every field at fault."""

    default_code = grpc.StatusCode.INVALID_ARGUMENT


class CodeRejected(InvalidArgument):
    """A health code was refused: malformed, badly signed, expired, not yet valid or revoked.

    ``reason`` names the class (``CODE_BAD_PREFIX``, ``CODE_BAD_BASE45``, ``CODE_EXPIRED``, ...).
    """


class NotFound(HealthCodeError):
    """The named resource does not exist (or the caller may not know that it does)."""

    default_code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(HealthCodeError):
    """The resource exists already."""

    default_code = grpc.StatusCode.ALREADY_EXISTS


class PermissionDenied(HealthCodeError):
    """The caller is known, but its role, checkpoint or jurisdiction does not allow the call."""

    default_code = grpc.StatusCode.PERMISSION_DENIED


class Unauthenticated(HealthCodeError):
    """No valid credential came with the call: log in (or refresh the token) first."""

    default_code = grpc.StatusCode.UNAUTHENTICATED


class FailedPrecondition(HealthCodeError):
    """The platform is not in a state that allows the call (e.g. no profile registered yet)."""

    default_code = grpc.StatusCode.FAILED_PRECONDITION


class RateLimited(HealthCodeError):
    """A rate limit was hit; wait ``retry_after`` seconds (None if the server gave no hint)."""

    default_code = grpc.StatusCode.RESOURCE_EXHAUSTED

    @property
    def retry_after(self) -> float | None:
        """Seconds to wait before retrying, from the ``retry_after_s`` metadata."""
        raw = self.metadata.get(RETRY_AFTER_KEY)
        if raw is None:
            return None
        try:
            value = float(raw)
        except ValueError:
            return None
        return value if value >= 0 else None


class Unavailable(HealthCodeError):
    """The platform (or one of its dependencies) cannot be reached; retry later.

    Idempotent calls have already been retried with backoff by the time this is raised.
    """

    default_code = grpc.StatusCode.UNAVAILABLE


class DeadlineExceeded(HealthCodeError):
    """The call's deadline passed before the platform answered."""

    default_code = grpc.StatusCode.DEADLINE_EXCEEDED


class ServerError(HealthCodeError):
    """The platform failed in a way no request should cause (a bug); report it."""

    default_code = grpc.StatusCode.INTERNAL


_CLASS_BY_CODE: dict[grpc.StatusCode, type[HealthCodeError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument,
    grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExists,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied,
    grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPrecondition,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable,
    grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
    grpc.StatusCode.INTERNAL: ServerError,
    grpc.StatusCode.UNKNOWN: ServerError,
    grpc.StatusCode.DATA_LOSS: ServerError,
    grpc.StatusCode.UNIMPLEMENTED: ServerError,
}


def error_class(code: grpc.StatusCode, reason: str = "") -> type[HealthCodeError]:
    """The exception class for a status code and ErrorInfo reason."""
    cls = _CLASS_BY_CODE.get(code, HealthCodeError)
    if cls is InvalidArgument and reason.startswith(CODE_REASON_PREFIX):
        return CodeRejected
    return cls


def _call_value(err: grpc.RpcError, name: str) -> Any:
    """``err.code()`` / ``err.details()`` / ``err.trailing_metadata()`` if ``err`` is a call."""
    method = getattr(err, name, None)
    if not callable(method):
        return None
    try:
        return method()
    except Exception:  # a half-built call object must not hide the real error
        return None


def _rich_status(err: grpc.RpcError) -> status_pb2.Status | None:
    """The ``google.rpc.Status`` in the trailing metadata, or None."""
    if not isinstance(err, grpc.aio.AioRpcError) and isinstance(err, grpc.Call):
        try:
            status: status_pb2.Status | None = rpc_status.from_call(err)
        except ValueError:
            status = None  # code/message disagree with the header; fall through to a raw read
        else:
            return status
    trailing = _call_value(err, "trailing_metadata")
    for key, value in trailing or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            try:
                return status_pb2.Status.FromString(value)
            except DecodeError:  # a corrupt detail is ignored; the status code still counts
                return None
    return None


def _build(
    code: grpc.StatusCode, message: str, status: status_pb2.Status | None
) -> HealthCodeError:
    reason = domain = ""
    metadata: dict[str, str] = {}
    violations: list[tuple[str, str]] = []
    for detail in status.details if status is not None else ():
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
        elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            bad = error_details_pb2.BadRequest()
            detail.Unpack(bad)
            violations.extend((v.field, v.description) for v in bad.field_violations)
    return error_class(code, reason)(
        message,
        code=code,
        reason=reason,
        domain=domain,
        metadata=metadata,
        field_violations=violations,
    )


def from_status(status: status_pb2.Status) -> HealthCodeError:
    """The typed exception for a ``google.rpc.Status``."""
    code = _CODE_BY_VALUE.get(status.code, grpc.StatusCode.UNKNOWN)
    return _build(code, status.message, status)


def from_rpc_error(err: grpc.RpcError) -> HealthCodeError:
    """The typed exception for a failed call (sync ``grpc`` or ``grpc.aio``).

    The rich ``google.rpc.Status`` details are read from the trailing metadata when present;
    otherwise (e.g. the channel could not connect) only the status code and message are known.
    The status code in the call's header is authoritative.
    """
    code = _call_value(err, "code")
    if not isinstance(code, grpc.StatusCode):
        code = grpc.StatusCode.UNKNOWN
    details = _call_value(err, "details")
    status = _rich_status(err)
    message = details if isinstance(details, str) and details else ""
    if not message and status is not None:
        message = status.message
    return _build(code, message, status)


__all__ = [
    "AlreadyExists",
    "CodeRejected",
    "DeadlineExceeded",
    "FailedPrecondition",
    "HealthCodeError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "ServerError",
    "Unauthenticated",
    "Unavailable",
    "from_rpc_error",
    "from_status",
]
