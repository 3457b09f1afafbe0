"""Partner SDK for the health code (健康码) platform.

:class:`HealthCodeClient` and :class:`AsyncHealthCodeClient` wrap the generated gRPC stubs with a
default deadline, bearer-token auth, retries for idempotent calls only, page iterators and typed
exceptions (:mod:`healthcode_sdk.errors`). The generated messages live in
``healthcode_sdk._gen.healthcode.v1``; the client's methods return them.
"""

from __future__ import annotations

from healthcode_sdk.client import AsyncHealthCodeClient, AsyncStubs, HealthCodeClient, Stubs
from healthcode_sdk.config import (
    DEFAULT_RETRY,
    DEFAULT_TIMEOUT,
    RetryPolicy,
    idempotent_methods,
    service_config,
    service_config_json,
)
from healthcode_sdk.errors import (
    AlreadyExists,
    CodeRejected,
    DeadlineExceeded,
    FailedPrecondition,
    HealthCodeError,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    RateLimited,
    ServerError,
    Unauthenticated,
    Unavailable,
    from_rpc_error,
)

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_RETRY",
    "DEFAULT_TIMEOUT",
    "AlreadyExists",
    "AsyncHealthCodeClient",
    "AsyncStubs",
    "CodeRejected",
    "DeadlineExceeded",
    "FailedPrecondition",
    "HealthCodeClient",
    "HealthCodeError",
    "InvalidArgument",
    "NotFound",
    "PermissionDenied",
    "RateLimited",
    "RetryPolicy",
    "ServerError",
    "Stubs",
    "Unauthenticated",
    "Unavailable",
    "__version__",
    "from_rpc_error",
    "idempotent_methods",
    "service_config",
    "service_config_json",
]
