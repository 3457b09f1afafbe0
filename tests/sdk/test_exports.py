"""The SDK's public surface is pinned: adding or removing a name is a deliberate change
(encode/httpx ``tests/test_exported_members.py``)."""

from __future__ import annotations

import healthcode_sdk
from healthcode_sdk import errors

EXPORTED = {
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
}


def test_all_is_pinned() -> None:
    assert set(healthcode_sdk.__all__) == EXPORTED
    assert len(healthcode_sdk.__all__) == len(EXPORTED), "duplicate names in __all__"


def test_every_exported_member_exists_and_is_public() -> None:
    members = {name for name in dir(healthcode_sdk) if not name.startswith("_")}
    missing = [name for name in healthcode_sdk.__all__ if not hasattr(healthcode_sdk, name)]
    assert not missing
    # Every public package attribute that is ours (not a submodule) is listed in __all__.
    submodules = {"client", "config", "errors"}
    ours = {
        name
        for name in members - submodules - {"annotations"}
        if getattr(getattr(healthcode_sdk, name), "__module__", "healthcode_sdk").startswith(
            "healthcode_sdk"
        )
    }
    assert ours <= set(healthcode_sdk.__all__)


def test_exported_exceptions_come_from_the_errors_module() -> None:
    for name in healthcode_sdk.__all__:
        member = getattr(healthcode_sdk, name)
        if isinstance(member, type) and issubclass(member, Exception):
            assert member.__module__ == "healthcode_sdk.errors"
            assert name in errors.__all__
            assert issubclass(member, healthcode_sdk.HealthCodeError)
