"""Channel configuration: deadlines, and retries for idempotent calls only.

Retries use gRPC's built-in retry support, declared in the channel's service config JSON: up to
``max_attempts`` attempts on ``UNAVAILABLE`` with exponential backoff and jitter (gRPC waits a
random time between 0 and the current backoff before each attempt). All attempts share the call's
deadline, so a retried call still returns within the deadline the caller chose.

Which methods are retried is derived from the proto descriptors, never from a list of names:

- reads and idempotent writes, declared with ``option idempotency_level = NO_SIDE_EFFECTS`` or
  ``IDEMPOTENT``;
- retry-safe writes, whose request has a top-level ``string request_id`` field: the platform
  stores the first response per ``(caller, method, request_id)`` and replays it, and the client
  fills in a fresh ``request_id`` when the caller leaves it empty, so every attempt of one call
  carries the same id.

Client-streaming methods are never retried.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from types import ModuleType
from typing import Any, Final

from google.protobuf import descriptor, descriptor_pb2

from healthcode_sdk._gen.healthcode.v1 import (
    admin_service_pb2,
    auth_service_pb2,
    checkpoint_service_pb2,
    code_service_pb2,
    resident_service_pb2,
    verification_service_pb2,
)

#: Seconds a call may take when the caller gives no timeout.
DEFAULT_TIMEOUT: Final = 10.0
#: The request field that makes a write retry-safe.
REQUEST_ID_FIELD: Final = "request_id"
#: Status codes on which idempotent calls are retried.
RETRYABLE_STATUS_CODES: Final = ("UNAVAILABLE",)

_IDEMPOTENT_LEVELS: Final = frozenset(
    {descriptor_pb2.MethodOptions.NO_SIDE_EFFECTS, descriptor_pb2.MethodOptions.IDEMPOTENT}
)
#: The generated modules of every platform service the SDK talks to.
SERVICE_MODULES: Final[tuple[ModuleType, ...]] = (
    auth_service_pb2,
    resident_service_pb2,
    code_service_pb2,
    verification_service_pb2,
    checkpoint_service_pb2,
    admin_service_pb2,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """gRPC ``retryPolicy`` for idempotent methods (exponential backoff with jitter)."""

    max_attempts: int = 4
    initial_backoff: float = 0.1
    max_backoff: float = 2.0
    backoff_multiplier: float = 2.0
    retryable_status_codes: tuple[str, ...] = RETRYABLE_STATUS_CODES

    def __post_init__(self) -> None:
        if not 2 <= self.max_attempts <= 5:
            # gRPC caps attempts at 5; 1 would mean "no retry" (pass retry=None instead).
            raise ValueError("max_attempts must be 2 to 5")
        if self.initial_backoff <= 0 or self.max_backoff < self.initial_backoff:
            raise ValueError("need 0 < initial_backoff <= max_backoff")
        if self.backoff_multiplier <= 0:
            raise ValueError("backoff_multiplier must be positive")
        if not self.retryable_status_codes:
            raise ValueError("retryable_status_codes must not be empty")

    def to_json(self) -> dict[str, Any]:
        """The ``retryPolicy`` object of the service config."""
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": _duration(self.initial_backoff),
            "maxBackoff": _duration(self.max_backoff),
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": list(self.retryable_status_codes),
        }


DEFAULT_RETRY: Final = RetryPolicy()


def _duration(seconds: float) -> str:
    """A protobuf JSON duration ("0.1s")."""
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"


def services() -> list[descriptor.ServiceDescriptor]:
    """Descriptors of every platform service, in a stable order."""
    return [
        service
        for module in SERVICE_MODULES
        for service in module.DESCRIPTOR.services_by_name.values()
    ]


def has_request_id(method: descriptor.MethodDescriptor) -> bool:
    """Whether the method's request has a top-level ``string request_id`` field."""
    field = method.input_type.fields_by_name.get(REQUEST_ID_FIELD)
    return field is not None and field.type == descriptor.FieldDescriptor.TYPE_STRING


def is_idempotent(method: descriptor.MethodDescriptor) -> bool:
    """Whether a method may be retried: declared side-effect free or idempotent, or a
    retry-safe write (``request_id``); never a client-streaming method."""
    if method.client_streaming:
        return False
    return method.GetOptions().idempotency_level in _IDEMPOTENT_LEVELS or has_request_id(method)


def method_path(method: descriptor.MethodDescriptor) -> str:
    """The gRPC path of a method: ``/healthcode.v1.VerificationService/VerifyCode``."""
    return f"/{method.containing_service.full_name}/{method.name}"


@cache
def idempotent_methods() -> tuple[str, ...]:
    """gRPC paths of every method the client retries, sorted."""
    return tuple(sorted(method_path(m) for s in services() for m in s.methods if is_idempotent(m)))


@cache
def request_id_methods() -> frozenset[str]:
    """gRPC paths of the retry-safe writes whose ``request_id`` the client fills in."""
    return frozenset(
        method_path(m)
        for s in services()
        for m in s.methods
        if has_request_id(m) and not m.client_streaming
    )


def service_config(retry: RetryPolicy | None = DEFAULT_RETRY) -> dict[str, Any]:
    """The gRPC service config: ``retry`` applied to :func:`idempotent_methods` only."""
    if retry is None:
        return {"methodConfig": []}
    names = []
    for path in idempotent_methods():
        service, method = path.lstrip("/").split("/")
        names.append({"service": service, "method": method})
    return {"methodConfig": [{"name": names, "retryPolicy": retry.to_json()}]}


def service_config_json(retry: RetryPolicy | None = DEFAULT_RETRY) -> str:
    """:func:`service_config` as the JSON string the ``grpc.service_config`` option takes."""
    return json.dumps(service_config(retry), separators=(",", ":"), sort_keys=True)


def channel_options(
    retry: RetryPolicy | None = DEFAULT_RETRY,
    options: Iterable[tuple[str, Any]] = (),
) -> Sequence[tuple[str, Any]]:
    """Channel options: the service config (retries on) and then the caller's ``options``,
    which win on conflicts."""
    merged: dict[str, Any] = {
        "grpc.service_config": service_config_json(retry),
        "grpc.enable_retries": 1 if retry is not None else 0,
    }
    merged.update(dict(options))
    return list(merged.items())


__all__ = [
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "RetryPolicy",
    "channel_options",
    "idempotent_methods",
    "is_idempotent",
    "request_id_methods",
    "service_config",
    "service_config_json",
]
