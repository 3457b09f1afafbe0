"""What every call through a client's channel gets, for convenience methods and raw stubs alike:

- a deadline (the client's default unless the call sets ``timeout=``);
- the bearer token of the client (read at call time, so ``login()`` takes effect at once) and the
  client's extra metadata;
- a fresh ``request_id`` for retry-safe writes that carry none, so gRPC's retries repeat it;
- failures raised as :class:`~healthcode_sdk.errors.HealthCodeError` subclasses, not
  ``grpc.RpcError``.

``grpc`` and ``grpc.aio`` need different interceptor classes; both share :class:`CallPolicy`.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any, NamedTuple

import grpc
import grpc.aio
from google.protobuf.message import Message

from healthcode_sdk.config import REQUEST_ID_FIELD, request_id_methods
from healthcode_sdk.errors import from_rpc_error

AUTHORIZATION = "authorization"


def _method_name(method: str | bytes) -> str:
    return method.decode() if isinstance(method, bytes) else method


class CallPolicy:
    """Deadline, credentials and request ids applied to each call of one client."""

    def __init__(
        self,
        *,
        timeout: float | None,
        token: Callable[[], str | None],
        metadata: Sequence[tuple[str, str]] = (),
    ) -> None:
        self.timeout = timeout
        self._token = token
        self._metadata = tuple(metadata)
        self._request_id_methods = request_id_methods()

    def timeout_for(self, timeout: float | None) -> float | None:
        """The call's own timeout, or the client's default."""
        return self.timeout if timeout is None else timeout

    def metadata_for(self, metadata: Any) -> list[tuple[str, Any]]:
        """The call's metadata plus the client's metadata and bearer token (unless the call
        brings its own ``authorization``)."""
        merged: list[tuple[str, Any]] = [(k, v) for k, v in (metadata or ())]
        merged.extend(self._metadata)
        token = self._token()
        if token and not any(key == AUTHORIZATION for key, _ in merged):
            merged.append((AUTHORIZATION, f"Bearer {token}"))
        return merged

    def request_for(self, method: str | bytes, request: Any) -> Any:
        """``request`` with a fresh ``request_id`` if the method is a retry-safe write and the
        caller left it empty (a copy: the caller's message is not changed)."""
        if _method_name(method) not in self._request_id_methods or not isinstance(request, Message):
            return request
        if getattr(request, REQUEST_ID_FIELD):
            return request
        filled = type(request)()
        filled.CopyFrom(request)
        setattr(filled, REQUEST_ID_FIELD, new_request_id())
        return filled


def new_request_id() -> str:
    """A fresh request id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


# --- grpc (sync) -------------------------------------------------------------------------------


class _Details(NamedTuple):
    method: str
    timeout: float | None
    metadata: Any
    credentials: grpc.CallCredentials | None
    wait_for_ready: bool | None
    compression: grpc.Compression | None


class _SyncDetails(_Details, grpc.ClientCallDetails):
    """Call details with our deadline and metadata."""


class _TranslatedOutcome:
    """A unary-response call/future whose ``result()``/``exception()`` raise/return typed errors."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def result(self, timeout: float | None = None) -> Any:
        try:
            return self._inner.result(timeout)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    def exception(self, timeout: float | None = None) -> BaseException | None:
        exc: BaseException | None = self._inner.exception(timeout)
        return from_rpc_error(exc) if isinstance(exc, grpc.RpcError) else exc

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _TranslatedStream:
    """A response stream whose iteration raises typed errors; other attributes delegate."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __iter__(self) -> Iterator[Any]:
        return self

    def __next__(self) -> Any:
        try:
            return next(self._inner)
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class SyncInterceptor(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """The :class:`CallPolicy` for a ``grpc.Channel``."""

    def __init__(self, policy: CallPolicy) -> None:
        self._policy = policy

    def _details(self, details: grpc.ClientCallDetails) -> _SyncDetails:
        return _SyncDetails(
            _method_name(details.method),
            self._policy.timeout_for(details.timeout),
            self._policy.metadata_for(details.metadata),
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )

    def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        request = self._policy.request_for(client_call_details.method, request)
        return _TranslatedOutcome(continuation(self._details(client_call_details), request))

    def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        request = self._policy.request_for(client_call_details.method, request)
        return _TranslatedStream(continuation(self._details(client_call_details), request))

    def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        call = continuation(self._details(client_call_details), request_iterator)
        return _TranslatedOutcome(call)

    def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        call = continuation(self._details(client_call_details), request_iterator)
        return _TranslatedStream(call)


# --- grpc.aio ----------------------------------------------------------------------------------


class _AioBase:
    def __init__(self, policy: CallPolicy) -> None:
        self._policy = policy

    def _details(self, details: grpc.aio.ClientCallDetails) -> grpc.aio.ClientCallDetails:
        return grpc.aio.ClientCallDetails(
            details.method,
            self._policy.timeout_for(details.timeout),
            grpc.aio.Metadata(*self._policy.metadata_for(details.metadata)),
            details.credentials,
            details.wait_for_ready,
        )


async def _translated(responses: Any) -> AsyncIterator[Any]:
    try:
        async for response in responses:
            yield response
    except grpc.RpcError as err:
        raise from_rpc_error(err) from err


class AioUnaryUnary(_AioBase, grpc.aio.UnaryUnaryClientInterceptor):
    """The :class:`CallPolicy` for unary calls on a ``grpc.aio.Channel``."""

    async def intercept_unary_unary(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        request = self._policy.request_for(client_call_details.method, request)
        call = await continuation(self._details(client_call_details), request)
        try:
            await call
        except grpc.RpcError as err:
            raise from_rpc_error(err) from err
        return call


class AioUnaryStream(_AioBase, grpc.aio.UnaryStreamClientInterceptor):
    """The :class:`CallPolicy` for server-streaming calls on a ``grpc.aio.Channel``."""

    async def intercept_unary_stream(
        self, continuation: Any, client_call_details: Any, request: Any
    ) -> Any:
        request = self._policy.request_for(client_call_details.method, request)
        call = await continuation(self._details(client_call_details), request)
        return _translated(call)


class AioStreamUnary(_AioBase, grpc.aio.StreamUnaryClientInterceptor):
    """Deadline and credentials for client-streaming calls (errors stay ``grpc.aio.AioRpcError``:
    the response cannot be awaited here while the caller may still be writing)."""

    async def intercept_stream_unary(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        return await continuation(self._details(client_call_details), request_iterator)


class AioStreamStream(_AioBase, grpc.aio.StreamStreamClientInterceptor):
    """The :class:`CallPolicy` for bidirectional calls on a ``grpc.aio.Channel``."""

    async def intercept_stream_stream(
        self, continuation: Any, client_call_details: Any, request_iterator: Any
    ) -> Any:
        call = await continuation(self._details(client_call_details), request_iterator)
        return _translated(call)


def aio_interceptors(policy: CallPolicy) -> list[grpc.aio.ClientInterceptor]:
    """One ``grpc.aio`` interceptor per call kind, all applying ``policy``."""
    return [
        AioUnaryUnary(policy),
        AioUnaryStream(policy),
        AioStreamUnary(policy),
        AioStreamStream(policy),
    ]
