"""Typed clients for the platform: :class:`HealthCodeClient` (blocking ``grpc``) and
:class:`AsyncHealthCodeClient` (``grpc.aio``).

Both expose the same convenience methods, which build the request, call the platform with the
client's deadline and bearer token, and return the response message; failures raise the typed
exceptions of :mod:`healthcode_sdk.errors`. Lists are iterated page by page with ``iter_*``
methods that follow ``next_page_token``. Everything else is reachable through ``client.stubs``
(the generated stubs on the same channel, so they get the same deadline, token, request ids,
retries and error translation)::

    with HealthCodeClient("codes.example.cn:443", credentials=grpc.ssl_channel_credentials()) as c:
        c.send_login_code("19900000000")
        c.login("19900000000", "123456")
        issued = c.issue_code().code
"""

# ``timeout`` on the async methods is the gRPC deadline passed to the call (as on the sync
# client), not an asyncio timeout: ASYNC109 does not apply.
# ruff: noqa: ASYNC109

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self, TypeAlias, TypeVar

import grpc
import grpc.aio
from google.protobuf.timestamp_pb2 import Timestamp

from healthcode_sdk._gen.healthcode.v1 import (
    admin_service_pb2_grpc,
    auth_service_pb2,
    auth_service_pb2_grpc,
    checkpoint_service_pb2,
    checkpoint_service_pb2_grpc,
    code_service_pb2,
    code_service_pb2_grpc,
    common_pb2,
    resident_service_pb2,
    resident_service_pb2_grpc,
    verification_service_pb2,
    verification_service_pb2_grpc,
)
from healthcode_sdk._interceptors import CallPolicy, SyncInterceptor, aio_interceptors
from healthcode_sdk.config import DEFAULT_RETRY, DEFAULT_TIMEOUT, RetryPolicy, channel_options

T = TypeVar("T")
Direction: TypeAlias = common_pb2.PassageDirection.ValueType
ENTRY: Direction = common_pb2.PASSAGE_DIRECTION_ENTRY


@dataclass(frozen=True, slots=True)
class Stubs:
    """The generated stubs of every platform service, on a client's channel."""

    auth: auth_service_pb2_grpc.AuthServiceStub
    residents: resident_service_pb2_grpc.ResidentServiceStub
    codes: code_service_pb2_grpc.CodeServiceStub
    verification: verification_service_pb2_grpc.VerificationServiceStub
    checkpoints: checkpoint_service_pb2_grpc.CheckpointServiceStub
    admin: admin_service_pb2_grpc.AdminServiceStub

    @classmethod
    def on(cls, channel: grpc.Channel) -> Stubs:
        """Stubs on ``channel``."""
        return cls(
            auth=auth_service_pb2_grpc.AuthServiceStub(channel),
            residents=resident_service_pb2_grpc.ResidentServiceStub(channel),
            codes=code_service_pb2_grpc.CodeServiceStub(channel),
            verification=verification_service_pb2_grpc.VerificationServiceStub(channel),
            checkpoints=checkpoint_service_pb2_grpc.CheckpointServiceStub(channel),
            admin=admin_service_pb2_grpc.AdminServiceStub(channel),
        )


@dataclass(frozen=True, slots=True)
class AsyncStubs:
    """The generated ``grpc.aio`` stubs of every platform service, on a client's channel."""

    auth: auth_service_pb2_grpc.AuthServiceAsyncStub
    residents: resident_service_pb2_grpc.ResidentServiceAsyncStub
    codes: code_service_pb2_grpc.CodeServiceAsyncStub
    verification: verification_service_pb2_grpc.VerificationServiceAsyncStub
    checkpoints: checkpoint_service_pb2_grpc.CheckpointServiceAsyncStub
    admin: admin_service_pb2_grpc.AdminServiceAsyncStub

    @classmethod
    def on(cls, channel: grpc.aio.Channel) -> AsyncStubs:
        """Stubs on ``channel``."""
        return cls(
            auth=auth_service_pb2_grpc.AuthServiceStub(channel),
            residents=resident_service_pb2_grpc.ResidentServiceStub(channel),
            codes=code_service_pb2_grpc.CodeServiceStub(channel),
            verification=verification_service_pb2_grpc.VerificationServiceStub(channel),
            checkpoints=checkpoint_service_pb2_grpc.CheckpointServiceStub(channel),
            admin=admin_service_pb2_grpc.AdminServiceStub(channel),
        )


# --- requests shared by both clients -----------------------------------------------------------


def _timestamp(value: dt.datetime | None, name: str) -> Timestamp | None:
    if value is None:
        return None
    if value.tzinfo is None:
        raise ValueError(f"{name} must be timezone-aware")
    ts = Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


def _verify_request(
    code: str, request_id: str | None, direction: Direction, temperature_celsius: float
) -> verification_service_pb2.VerifyCodeRequest:
    return verification_service_pb2.VerifyCodeRequest(
        code=code,
        # Empty: the client fills in a fresh id that every retry of this call repeats.
        request_id=request_id or "",
        direction=direction,
        temperature_celsius=temperature_celsius,
    )


def _passages_request(
    start: dt.datetime | None, end: dt.datetime | None, page_size: int
) -> Callable[[str], checkpoint_service_pb2.ListPassagesRequest]:
    """Requests for each page of one ListPassages window (arguments checked now, not lazily)."""
    start_time, end_time = _timestamp(start, "start"), _timestamp(end, "end")
    size = _check_page_size(page_size)

    def request(page_token: str) -> checkpoint_service_pb2.ListPassagesRequest:
        return checkpoint_service_pb2.ListPassagesRequest(
            start_time=start_time, end_time=end_time, page_size=size, page_token=page_token
        )

    return request


def _check_page_size(page_size: int) -> int:
    if page_size < 0:
        raise ValueError("page_size must not be negative (0 = the server's default)")
    return page_size


class _ClientBase:
    """Settings shared by the sync and async clients."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None,
        timeout: float | None,
        retry: RetryPolicy | None,
        options: Iterable[tuple[str, Any]],
        metadata: Sequence[tuple[str, str]],
    ) -> None:
        if timeout is not None and timeout <= 0:
            raise ValueError("timeout must be positive (or None for no deadline)")
        self.target = target
        self._token = token
        self._policy = CallPolicy(timeout=timeout, token=lambda: self._token, metadata=metadata)
        self._options = channel_options(retry, options)

    @property
    def token(self) -> str | None:
        """The bearer token sent with every call (set by :meth:`login`, or assign one)."""
        return self._token

    @token.setter
    def token(self, value: str | None) -> None:
        self._token = value or None

    @property
    def timeout(self) -> float | None:
        """Default deadline of every call, in seconds (None: no deadline)."""
        return self._policy.timeout


class HealthCodeClient(_ClientBase):
    """Blocking client for the health code platform.

    Args:
        target: ``host:port`` of the platform server.
        token: A bearer token (access token, device token or service-account token); residents
            and staff can instead call :meth:`send_login_code` and :meth:`login`.
        credentials: Channel credentials for TLS or mTLS, e.g.
            ``grpc.ssl_channel_credentials(root_certificates=ca, private_key=key,
            certificate_chain=cert)``; None for a plaintext channel (development only).
        timeout: Default deadline of every call in seconds; a call's own ``timeout=`` wins.
        retry: Retry policy for idempotent calls, or None to never retry.
        options: Extra gRPC channel options (they win over the SDK's).
        metadata: Extra metadata sent with every call.
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        options: Iterable[tuple[str, Any]] = (),
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(
            target, token=token, timeout=timeout, retry=retry, options=options, metadata=metadata
        )
        if credentials is None:
            self._raw = grpc.insecure_channel(target, options=self._options)
        else:
            self._raw = grpc.secure_channel(target, credentials, options=self._options)
        interceptor = SyncInterceptor(self._policy)
        self.channel: grpc.Channel = grpc.intercept_channel(self._raw, interceptor)
        self.stubs = Stubs.on(self.channel)

    def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        self._raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # --- auth --------------------------------------------------------------------------------

    def send_login_code(
        self, phone: str, *, timeout: float | None = None
    ) -> auth_service_pb2.SendLoginCodeResponse:
        """Send an SMS login code to ``phone``."""
        return self.stubs.auth.SendLoginCode(
            auth_service_pb2.SendLoginCodeRequest(phone=phone), timeout=timeout
        )

    def login(
        self, phone: str, code: str, *, timeout: float | None = None
    ) -> auth_service_pb2.LoginResponse:
        """Log in with the SMS code; the client then sends the access token with every call."""
        response = self.stubs.auth.Login(
            auth_service_pb2.LoginRequest(phone=phone, code=code), timeout=timeout
        )
        self.token = response.access_token
        return response

    # --- residents and codes -----------------------------------------------------------------

    def issue_code(
        self, subject_id: str = "", *, timeout: float | None = None
    ) -> code_service_pb2.IssueCodeResponse:
        """A fresh dynamic code for the caller (or a dependent's ``subject_id``)."""
        return self.stubs.codes.IssueCode(
            code_service_pb2.IssueCodeRequest(subject_id=subject_id), timeout=timeout
        )

    def get_health_status(
        self, subject_id: str = "", *, timeout: float | None = None
    ) -> resident_service_pb2.GetHealthStatusResponse:
        """The caller's (or a dependent's) current colour, with reasons and decisions."""
        return self.stubs.residents.GetHealthStatus(
            resident_service_pb2.GetHealthStatusRequest(subject_id=subject_id), timeout=timeout
        )

    def iter_my_passages(
        self, page_size: int = 0, *, subject_id: str = "", timeout: float | None = None
    ) -> Iterator[common_pb2.Passage]:
        """Every passage of the caller (or a dependent), newest first, fetched page by page."""
        size = _check_page_size(page_size)

        def page(token: str) -> resident_service_pb2.ListMyPassagesResponse:
            return self.stubs.residents.ListMyPassages(
                resident_service_pb2.ListMyPassagesRequest(
                    subject_id=subject_id, page_size=size, page_token=token
                ),
                timeout=timeout,
            )

        return _pages(page, lambda r: r.passages)

    # --- verification ------------------------------------------------------------------------

    def verify_code(
        self,
        code: str,
        *,
        request_id: str | None = None,
        direction: Direction = ENTRY,
        temperature_celsius: float = 0.0,
        timeout: float | None = None,
    ) -> verification_service_pb2.VerifyCodeResponse:
        """Verify a code online (staff and devices also record a passage).

        ``request_id`` identifies the scan: a call repeated with the same id records one passage.
        Without one, the client picks a fresh id per call (reused by automatic retries).
        Raises :class:`~healthcode_sdk.errors.CodeRejected` with the rejection reason.
        """
        return self.stubs.verification.VerifyCode(
            _verify_request(code, request_id, direction, temperature_celsius), timeout=timeout
        )

    def batch_verify_codes(
        self, codes: Iterable[str], *, timeout: float | None = None
    ) -> verification_service_pb2.BatchVerifyCodesResponse:
        """Verify up to 500 codes; each result says valid or why not. Records nothing."""
        return self.stubs.verification.BatchVerifyCodes(
            verification_service_pb2.BatchVerifyCodesRequest(codes=list(codes)), timeout=timeout
        )

    def get_trust_list(
        self, *, timeout: float | None = None
    ) -> verification_service_pb2.GetTrustListResponse:
        """Every issuer key, and the signed trust list for offline verification."""
        return self.stubs.verification.GetTrustList(
            verification_service_pb2.GetTrustListRequest(), timeout=timeout
        )

    def get_revocation_list(
        self, *, timeout: float | None = None
    ) -> verification_service_pb2.GetRevocationListResponse:
        """Revoked printed codes, signed, for offline verification."""
        return self.stubs.verification.GetRevocationList(
            verification_service_pb2.GetRevocationListRequest(), timeout=timeout
        )

    def query_status_by_identity(
        self, id_number: str, purpose: str, *, timeout: float | None = None
    ) -> verification_service_pb2.QueryStatusByIdentityResponse:
        """A person's colour by ID number (provincial platform; audited with ``purpose``)."""
        return self.stubs.verification.QueryStatusByIdentity(
            verification_service_pb2.QueryStatusByIdentityRequest(
                id_number=id_number, purpose=purpose
            ),
            timeout=timeout,
        )

    # --- checkpoints -------------------------------------------------------------------------

    def iter_passages(
        self,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        *,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> Iterator[common_pb2.Passage]:
        """Passages at the caller's checkpoint between ``start`` and ``end`` (timezone-aware;
        default: the last 24 hours), fetched page by page."""
        request = _passages_request(start, end, page_size)

        def page(token: str) -> checkpoint_service_pb2.ListPassagesResponse:
            return self.stubs.checkpoints.ListPassages(request(token), timeout=timeout)

        return _pages(page, lambda r: r.passages)


class AsyncHealthCodeClient(_ClientBase):
    """``asyncio`` client for the health code platform (same arguments as
    :class:`HealthCodeClient`); create it inside the event loop that uses it."""

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        timeout: float | None = DEFAULT_TIMEOUT,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        options: Iterable[tuple[str, Any]] = (),
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        super().__init__(
            target, token=token, timeout=timeout, retry=retry, options=options, metadata=metadata
        )
        interceptors = aio_interceptors(self._policy)
        if credentials is None:
            self.channel = grpc.aio.insecure_channel(
                target, options=self._options, interceptors=interceptors
            )
        else:
            self.channel = grpc.aio.secure_channel(
                target, credentials, options=self._options, interceptors=interceptors
            )
        self.stubs = AsyncStubs.on(self.channel)

    async def close(self) -> None:
        """Close the channel; calls in flight are cancelled."""
        await self.channel.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # --- auth --------------------------------------------------------------------------------

    async def send_login_code(
        self, phone: str, *, timeout: float | None = None
    ) -> auth_service_pb2.SendLoginCodeResponse:
        """Send an SMS login code to ``phone``."""
        return await self.stubs.auth.SendLoginCode(
            auth_service_pb2.SendLoginCodeRequest(phone=phone), timeout=timeout
        )

    async def login(
        self, phone: str, code: str, *, timeout: float | None = None
    ) -> auth_service_pb2.LoginResponse:
        """Log in with the SMS code; the client then sends the access token with every call."""
        response = await self.stubs.auth.Login(
            auth_service_pb2.LoginRequest(phone=phone, code=code), timeout=timeout
        )
        self.token = response.access_token
        return response

    # --- residents and codes -----------------------------------------------------------------

    async def issue_code(
        self, subject_id: str = "", *, timeout: float | None = None
    ) -> code_service_pb2.IssueCodeResponse:
        """A fresh dynamic code for the caller (or a dependent's ``subject_id``)."""
        return await self.stubs.codes.IssueCode(
            code_service_pb2.IssueCodeRequest(subject_id=subject_id), timeout=timeout
        )

    async def get_health_status(
        self, subject_id: str = "", *, timeout: float | None = None
    ) -> resident_service_pb2.GetHealthStatusResponse:
        """The caller's (or a dependent's) current colour, with reasons and decisions."""
        return await self.stubs.residents.GetHealthStatus(
            resident_service_pb2.GetHealthStatusRequest(subject_id=subject_id), timeout=timeout
        )

    def iter_my_passages(
        self, page_size: int = 0, *, subject_id: str = "", timeout: float | None = None
    ) -> AsyncIterator[common_pb2.Passage]:
        """Every passage of the caller (or a dependent), newest first, fetched page by page."""
        size = _check_page_size(page_size)

        async def page(token: str) -> resident_service_pb2.ListMyPassagesResponse:
            return await self.stubs.residents.ListMyPassages(
                resident_service_pb2.ListMyPassagesRequest(
                    subject_id=subject_id, page_size=size, page_token=token
                ),
                timeout=timeout,
            )

        return _async_pages(page, lambda r: r.passages)

    # --- verification ------------------------------------------------------------------------

    async def verify_code(
        self,
        code: str,
        *,
        request_id: str | None = None,
        direction: Direction = ENTRY,
        temperature_celsius: float = 0.0,
        timeout: float | None = None,
    ) -> verification_service_pb2.VerifyCodeResponse:
        """Verify a code online; see :meth:`HealthCodeClient.verify_code`."""
        return await self.stubs.verification.VerifyCode(
            _verify_request(code, request_id, direction, temperature_celsius), timeout=timeout
        )

    async def batch_verify_codes(
        self, codes: Iterable[str], *, timeout: float | None = None
    ) -> verification_service_pb2.BatchVerifyCodesResponse:
        """Verify up to 500 codes; each result says valid or why not. Records nothing."""
        return await self.stubs.verification.BatchVerifyCodes(
            verification_service_pb2.BatchVerifyCodesRequest(codes=list(codes)), timeout=timeout
        )

    async def get_trust_list(
        self, *, timeout: float | None = None
    ) -> verification_service_pb2.GetTrustListResponse:
        """Every issuer key, and the signed trust list for offline verification."""
        return await self.stubs.verification.GetTrustList(
            verification_service_pb2.GetTrustListRequest(), timeout=timeout
        )

    async def get_revocation_list(
        self, *, timeout: float | None = None
    ) -> verification_service_pb2.GetRevocationListResponse:
        """Revoked printed codes, signed, for offline verification."""
        return await self.stubs.verification.GetRevocationList(
            verification_service_pb2.GetRevocationListRequest(), timeout=timeout
        )

    async def query_status_by_identity(
        self, id_number: str, purpose: str, *, timeout: float | None = None
    ) -> verification_service_pb2.QueryStatusByIdentityResponse:
        """A person's colour by ID number (provincial platform; audited with ``purpose``)."""
        return await self.stubs.verification.QueryStatusByIdentity(
            verification_service_pb2.QueryStatusByIdentityRequest(
                id_number=id_number, purpose=purpose
            ),
            timeout=timeout,
        )

    # --- checkpoints -------------------------------------------------------------------------

    def iter_passages(
        self,
        start: dt.datetime | None = None,
        end: dt.datetime | None = None,
        *,
        page_size: int = 0,
        timeout: float | None = None,
    ) -> AsyncIterator[common_pb2.Passage]:
        """Passages at the caller's checkpoint between ``start`` and ``end`` (timezone-aware;
        default: the last 24 hours), fetched page by page."""
        request = _passages_request(start, end, page_size)

        async def page(token: str) -> checkpoint_service_pb2.ListPassagesResponse:
            return await self.stubs.checkpoints.ListPassages(request(token), timeout=timeout)

        return _async_pages(page, lambda r: r.passages)


# --- page iteration ----------------------------------------------------------------------------


R = TypeVar("R", bound=Any)


def _pages(fetch: Callable[[str], R], items: Callable[[R], Iterable[T]]) -> Iterator[T]:
    """Items of every page, following ``next_page_token`` until it is empty."""
    token = ""
    while True:
        response = fetch(token)
        yield from items(response)
        token = response.next_page_token
        if not token:
            return


async def _async_pages(
    fetch: Callable[[str], Awaitable[R]], items: Callable[[R], Iterable[T]]
) -> AsyncIterator[T]:
    """Items of every page, following ``next_page_token`` until it is empty."""
    token = ""
    while True:
        response = await fetch(token)
        for item in items(response):
            yield item
        token = response.next_page_token
        if not token:
            return


__all__ = ["AsyncHealthCodeClient", "AsyncStubs", "HealthCodeClient", "Stubs"]
