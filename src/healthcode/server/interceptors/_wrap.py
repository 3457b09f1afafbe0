"""Wrapping the behaviour of a grpc.aio method handler, for all four call shapes.

``around`` is an async context manager factory run around each call *inside the call's task*, so
context variables it sets are seen by the handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

if TYPE_CHECKING:  # grpc's classes are generic only in its type stubs
    Context: TypeAlias = grpc.aio.ServicerContext[Any, Any]
    Handler: TypeAlias = grpc.RpcMethodHandler[Any, Any]
    Around: TypeAlias = Callable[[Context, str], AbstractAsyncContextManager[None]]


def wrap_handler(handler: Handler | None, method: str, around: Around) -> Handler | None:
    """Return ``handler`` with every call run inside ``around(context, method)``."""
    if handler is None:
        return None
    behaviour: Any
    if handler.unary_unary is not None:
        behaviour = handler.unary_unary

        async def unary_unary(request: Any, context: Context) -> Any:
            async with around(context, method):
                return await behaviour(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        behaviour = handler.unary_stream

        async def unary_stream(request: Any, context: Context) -> AsyncIterator[Any]:
            async with around(context, method):
                async for item in behaviour(request, context):
                    yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        behaviour = handler.stream_unary

        async def stream_unary(requests: Any, context: Context) -> Any:
            async with around(context, method):
                return await behaviour(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    behaviour = handler.stream_stream

    async def stream_stream(requests: Any, context: Context) -> AsyncIterator[Any]:
        async with around(context, method):
            async for item in behaviour(requests, context):
                yield item

    return grpc.stream_stream_rpc_method_handler(
        stream_stream,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
