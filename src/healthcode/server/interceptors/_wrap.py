"""Wrapping the behaviour of a grpc.aio method handler, for all four call shapes.

An interceptor module provides a :class:`Wrapper`: ``unary(behaviour, method)`` returns the
behaviour of a call with one response (unary-unary, stream-unary) wrapped in plain ``try`` /
``finally`` code, ``streaming(behaviour, method)`` the same for calls with a response stream. The
wrapper runs *inside the call's task*, so context variables it sets are seen by the handler.

Why not ``asynccontextmanager``: a generator-based context manager costs an async generator and
two extra coroutines per call and per interceptor, measurable on the VerifyCode hot path (ADR
0005). Wrapped handlers are cached per method, so the closures are built once, not per call.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import grpc

if TYPE_CHECKING:  # grpc's classes are generic only in its type stubs
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]

#: ``behaviour(request_or_request_iterator, context)`` of a call with one response.
Unary: TypeAlias = Callable[[Any, "Context"], Awaitable[Any]]
#: ``behaviour(request_or_request_iterator, context)`` of a call with a response stream.
Streaming: TypeAlias = Callable[[Any, "Context"], AsyncIterator[Any]]


class Wrapper(Protocol):
    """What an interceptor does around a call, for both response shapes."""

    def unary(self, behaviour: Unary, method: str) -> Unary:
        """``behaviour`` wrapped (unary-unary and stream-unary calls)."""
        ...

    def streaming(self, behaviour: Streaming, method: str) -> Streaming:
        """``behaviour`` wrapped (unary-stream and stream-stream calls)."""
        ...


def wrap_handler(handler: Handler | None, method: str, wrapper: Wrapper) -> Handler | None:
    """Return ``handler`` with every call run inside ``wrapper``."""
    if handler is None:
        return None
    # The stubs type the behaviours as sync callables; on a grpc.aio server they are async.
    h: Any = handler
    if h.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            wrapper.unary(h.unary_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if h.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            wrapper.streaming(h.unary_stream, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if h.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            wrapper.unary(h.stream_unary, method),
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    return grpc.stream_stream_rpc_method_handler(
        wrapper.streaming(h.stream_stream, method),
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class HandlerCache:
    """Wrapped handlers per method, reused while the inner handler is the same object.

    The server's generic handlers return the same handler object for a method on every call, so
    each interceptor wraps a method once; an inner handler that changes is simply wrapped again.
    """

    __slots__ = ("_by_method", "_wrapper")

    def __init__(self, wrapper: Wrapper) -> None:
        self._wrapper = wrapper
        self._by_method: dict[str, tuple[Handler, Handler]] = {}

    def get(self, handler: Handler | None, method: str) -> Handler | None:
        """The wrapped form of ``handler`` (None stays None: unknown method)."""
        if handler is None:
            return None
        known = self._by_method.get(method)
        if known is not None and known[0] is handler:
            return known[1]
        wrapped = wrap_handler(handler, method, self._wrapper)
        assert wrapped is not None
        if len(self._by_method) < 4096:  # method names come from the server's own table
            self._by_method[method] = (handler, wrapped)
        return wrapped


class WrappingInterceptor(grpc.aio.ServerInterceptor):
    """A server interceptor that wraps every method's handler with one :class:`Wrapper`
    (cached per method, see :class:`HandlerCache`)."""

    def __init__(self, wrapper: Wrapper) -> None:
        self._handlers = HandlerCache(wrapper)

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        return self._handlers.get(handler, handler_call_details.method)
