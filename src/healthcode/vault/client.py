"""Async client of the vault, used by the platform server.

Every call is one round trip with a default deadline. Errors arrive as the common service
errors, so the server can re-raise them (with its own field paths for INVALID_ARGUMENT):

- UNAVAILABLE / DEADLINE_EXCEEDED -> :class:`~healthcode.common.errors.Unavailable`
  (reason from the vault, e.g. KEY_BACKEND_UNAVAILABLE, or VAULT_UNAVAILABLE when the vault
  itself cannot be reached);
- INVALID_ARGUMENT -> :class:`~healthcode.common.errors.InvalidArgument` with the vault's field
  violations (``items[2].value``);
- PERMISSION_DENIED -> PermissionDenied; NOT_FOUND -> NotFound; FAILED_PRECONDITION ->
  FailedPrecondition; UNAUTHENTICATED -> Unauthenticated;
- DATA_LOSS -> :class:`~healthcode.vault.errors.DataLoss`; anything else -> ServiceError.

Reads (lookup, mask, detokenize) are retried once on UNAVAILABLE through the channel's service
config; writes are not retried automatically.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_status import rpc_status
from healthcode_sdk._gen.healthcode.vault.v1 import vault_service_pb2, vault_service_pb2_grpc

from healthcode.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unauthenticated,
    Unavailable,
)
from healthcode.vault.auth import read_credential_file
from healthcode.vault.errors import DOMAIN, DataLoss
from healthcode.vault.fields import FieldType, Purpose
from healthcode.vault.service import FIELD_TO_PB, PURPOSE_TO_PB

__all__ = [
    "DEFAULT_TIMEOUT",
    "DetokenizedItem",
    "FieldType",
    "Purpose",
    "TokenResult",
    "TokenizeItem",
    "VaultClient",
]

DEFAULT_TIMEOUT = 5.0
_SERVICE = "healthcode.vault.v1.VaultService"
_SERVICE_CONFIG = json.dumps(
    {
        "methodConfig": [
            {
                "name": [
                    {"service": _SERVICE, "method": m}
                    for m in ("LookupByValue", "MaskBatch", "DetokenizeBatch")
                ],
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialBackoff": "0.05s",
                    "maxBackoff": "0.5s",
                    "backoffMultiplier": 2,
                    "retryableStatusCodes": ["UNAVAILABLE"],
                },
            }
        ]
    }
)


@dataclass(frozen=True)
class TokenizeItem:
    """One value to tokenize for a person (``subject_id`` is the server's opaque person id)."""

    field_type: FieldType
    value: str
    subject_id: str


@dataclass(frozen=True)
class TokenResult:
    """A token, the masked display form, and whether this call created it."""

    token: str
    masked: str
    created: bool


@dataclass(frozen=True)
class DetokenizedItem:
    """A detokenized value; ``masked`` is True when the policy allowed only the masked form."""

    token: str
    value: str
    masked: bool
    field_type: FieldType


_FIELD_FROM_PB = {v: k for k, v in FIELD_TO_PB.items()}
# googleapis-common-protos ships no type information; the module is used dynamically.
error_details_pb2: Any = importlib.import_module("google.rpc.error_details_pb2")


def columns_of(
    response: vault_service_pb2.DetokenizeBatchResponse,
) -> vault_service_pb2.DetokenizedColumns:
    """A DetokenizeBatch answer as columns, also from a vault that predates them (during a
    rolling upgrade it ignores ``columns`` and answers one message per item)."""
    if response.HasField("columns") or not response.values:
        return response.columns
    return vault_service_pb2.DetokenizedColumns(
        values=[v.value for v in response.values],
        masked=[v.masked for v in response.values],
        field_types=[v.field_type for v in response.values],
    )


def _translate(err: grpc.aio.AioRpcError) -> ServiceError:
    code = err.code()
    reason = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    status = rpc_status.from_call(err)
    if status is not None:
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason = info.reason
                metadata = dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.extend(
                    FieldViolation(v.field, v.description) for v in bad.field_violations
                )
    message = err.details() or code.name.lower()
    kw = {"domain": DOMAIN, "metadata": metadata}
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return Unavailable(
            reason or "VAULT_UNAVAILABLE",
            message if reason else "the privacy vault cannot be reached",
            **kw,
        )
    if code is grpc.StatusCode.INVALID_ARGUMENT:
        return InvalidArgument(reason or "INVALID_ARGUMENT", message, violations=violations, **kw)
    if code is grpc.StatusCode.PERMISSION_DENIED:
        return PermissionDenied(reason or "PERMISSION_DENIED", message, **kw)
    if code is grpc.StatusCode.NOT_FOUND:
        return NotFound(reason or "NOT_FOUND", message, **kw)
    if code is grpc.StatusCode.FAILED_PRECONDITION:
        return FailedPrecondition(
            reason or "FAILED_PRECONDITION", message, violations=violations, **kw
        )
    if code is grpc.StatusCode.UNAUTHENTICATED:
        return Unauthenticated(reason or "UNAUTHENTICATED", message, **kw)
    if code is grpc.StatusCode.DATA_LOSS:
        return DataLoss(reason or "DATA_LOSS", message, metadata=metadata)
    return ServiceError(
        code=code, reason=reason or code.name, message=message, domain=DOMAIN, metadata=metadata
    )


class VaultClient:
    """One channel to the vault; create with :meth:`connect`, share it, ``close`` at the end."""

    def __init__(self, channel: grpc.aio.Channel, credential: str, timeout: float) -> None:
        self._channel = channel
        self._stub = vault_service_pb2_grpc.VaultServiceStub(channel)
        # With mTLS alone (credential ""), the certificate is the identity.
        self._metadata: tuple[tuple[str, str], ...] = (
            (("authorization", f"Bearer {credential}"),) if credential else ()
        )
        self.timeout = timeout

    @classmethod
    def connect(
        cls,
        address: str,
        credential: str,
        *,
        tls: grpc.ChannelCredentials | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> VaultClient:
        """Open a channel (lazily connected). ``tls``: ``grpc.ssl_channel_credentials(...)``."""
        options = [("grpc.service_config", _SERVICE_CONFIG), ("grpc.enable_retries", 1)]
        channel = (
            grpc.aio.secure_channel(address, tls, options=options)
            if tls is not None
            else grpc.aio.insecure_channel(address, options=options)
        )
        return cls(channel, credential, timeout)

    @classmethod
    def from_credential_file(cls, address: str, path: Path | str, **kwargs: object) -> VaultClient:
        """Connect with the credential file at ``path``.

        The platform server passes ``VaultSettings().platform_credential_file``.
        """
        return cls.connect(address, read_credential_file(Path(path)), **kwargs)  # type: ignore[arg-type]

    async def tokenize(
        self, items: Sequence[TokenizeItem], *, request_id: str = ""
    ) -> list[TokenResult]:
        """Tokenize values in one round trip; a known value returns its existing token."""
        request = vault_service_pb2.TokenizeBatchRequest(
            request_id=request_id,
            items=[
                vault_service_pb2.TokenizeItem(
                    field_type=FIELD_TO_PB[FieldType(i.field_type)],
                    value=i.value,
                    subject_id=i.subject_id,
                )
                for i in items
            ],
        )
        try:
            response = await self._stub.TokenizeBatch(
                request, timeout=self.timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as err:
            raise _translate(err) from None
        return [TokenResult(r.token, r.masked, r.created) for r in response.results]

    async def lookup(self, field_type: FieldType, values: Sequence[str]) -> list[str | None]:
        """Existing tokens for ID numbers or phones (None where unknown), one round trip."""
        request = vault_service_pb2.LookupByValueRequest(
            field_type=FIELD_TO_PB[FieldType(field_type)], values=list(values)
        )
        try:
            response = await self._stub.LookupByValue(
                request, timeout=self.timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as err:
            raise _translate(err) from None
        return [r.token if r.found else None for r in response.results]

    async def mask(self, tokens: Sequence[str]) -> list[str]:
        """Masked display forms of tokens."""
        try:
            response = await self._stub.MaskBatch(
                vault_service_pb2.MaskBatchRequest(tokens=list(tokens)),
                timeout=self.timeout,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as err:
            raise _translate(err) from None
        return [v.masked for v in response.values]

    async def _detokenize(
        self, tokens: Sequence[str], purpose: Purpose | str, reference: str, request_id: str
    ) -> vault_service_pb2.DetokenizedColumns:
        """The answer as columns (item ``i`` of each belongs to ``tokens[i]``)."""
        try:
            pb_purpose = PURPOSE_TO_PB[Purpose(purpose)]
        except ValueError:
            raise InvalidArgument(
                "INVALID_ARGUMENT",
                "invalid purpose",
                domain=DOMAIN,
                violations=[
                    FieldViolation(
                        "purpose", "must be one of " + ", ".join(p.value for p in Purpose)
                    )
                ],
            ) from None
        request = vault_service_pb2.DetokenizeBatchRequest(
            tokens=tokens,
            purpose=pb_purpose,
            reference=reference,
            request_id=request_id,
            columns=True,
        )
        try:
            response: vault_service_pb2.DetokenizeBatchResponse = await self._stub.DetokenizeBatch(
                request, timeout=self.timeout, metadata=self._metadata
            )
        except grpc.aio.AioRpcError as err:
            raise _translate(err) from None
        return columns_of(response)

    async def detokenize_items(
        self,
        tokens: Sequence[str],
        purpose: Purpose | str,
        *,
        reference: str = "",
        request_id: str = "",
    ) -> list[DetokenizedItem]:
        """Values (or masked values, as the policy says) with their type and masking flag."""
        columns = await self._detokenize(tokens, purpose, reference, request_id)
        return [
            DetokenizedItem(t, v, m, _FIELD_FROM_PB[f])
            for t, v, m, f in zip(
                tokens, columns.values, columns.masked, columns.field_types, strict=True
            )
        ]

    async def detokenize(
        self,
        tokens: Sequence[str],
        purpose: Purpose | str,
        *,
        reference: str = "",
        request_id: str = "",
    ) -> list[str]:
        """Values behind tokens for a purpose (masked where the policy allows only that)."""
        return list((await self._detokenize(tokens, purpose, reference, request_id)).values)

    async def erase(
        self, subject_ids: Sequence[str], *, reference: str = "", request_id: str = ""
    ) -> int:
        """Crypto-shred subjects; returns how many had live data."""
        try:
            response = await self._stub.Erase(
                vault_service_pb2.EraseRequest(
                    subject_ids=list(subject_ids), reference=reference, request_id=request_id
                ),
                timeout=self.timeout,
                metadata=self._metadata,
            )
        except grpc.aio.AioRpcError as err:
            raise _translate(err) from None
        return response.erased_subject_count

    async def close(self) -> None:
        """Close the channel."""
        await self._channel.close()

    async def __aenter__(self) -> VaultClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()
