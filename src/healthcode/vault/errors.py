"""Vault-specific errors on top of :mod:`healthcode.common.errors` (domain ``healthcode.vault``).

Hierarchy::

    ServiceError (healthcode.common.errors)
     ├── ... (InvalidArgument, NotFound, PermissionDenied, Unavailable, ...)
     └── DataLoss                 DATA_LOSS: ciphertext or a wrapped key failed its integrity check

Reasons used by the vault (ErrorInfo.reason): INVALID_ARGUMENT, TOKEN_NOT_FOUND, TOKEN_ERASED,
VALUE_HELD_BY_OTHER_SUBJECT, SUBJECT_ERASED, POLICY_DENIED, ROLE_DENIED, UNAUTHENTICATED,
KEY_BACKEND_UNAVAILABLE, KEY_BACKEND_SEALED, DATABASE_UNAVAILABLE, CIPHERTEXT_INTEGRITY_FAILURE,
WRAPPED_KEY_INTEGRITY_FAILURE.
"""

from __future__ import annotations

from collections.abc import Mapping

import grpc

from healthcode.common.errors import FieldViolation, InvalidArgument, ServiceError

DOMAIN = "healthcode.vault"


class DataLoss(ServiceError):
    """Stored data failed its integrity check (tampered ciphertext or wrapped key)."""

    def __init__(
        self, reason: str, message: str, *, metadata: Mapping[str, str] | None = None
    ) -> None:
        super().__init__(
            code=grpc.StatusCode.DATA_LOSS,
            reason=reason,
            message=message,
            domain=DOMAIN,
            metadata=dict(metadata or {}),
        )


def invalid_fields(violations: list[FieldViolation]) -> InvalidArgument:
    """One INVALID_ARGUMENT naming every field at fault (never the values)."""
    fields = ", ".join(v.field for v in violations[:5])
    more = f" and {len(violations) - 5} more" if len(violations) > 5 else ""
    return InvalidArgument(
        "INVALID_ARGUMENT", f"invalid {fields}{more}", domain=DOMAIN, violations=violations
    )
