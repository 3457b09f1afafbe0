"""Wrapping the behaviour of a grpc.aio method handler, for all four call shapes.

``around`` is an async context manager factory run around each call *inside the call's task*, so
context variables it sets are seen by the handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import grpc

Around = Callable[[grpc.aio.ServicerContext, str], AbstractAsyncContextManager[None]]


def wrap_handler(
    handler: grpc.RpcMethodHandler | None, method: str, around: Around
) -> grpc.RpcMethodHandler | None:
    """Return ``handler`` with every call run inside ``around(context, method)``."""
    if handler is None:
        return None

    if handler.unary_unary is not None:
        inner_uu = handler.unary_unary

        async def unary_unary(request: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(context, method):
                return await inner_uu(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.unary_stream is not None:
        inner_us = handler.unary_stream

        async def unary_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            async with around(context, method):
                async for item in inner_us(request, context):
                    yield item

        return grpc.unary_stream_rpc_method_handler(
            unary_stream,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    if handler.stream_unary is not None:
        inner_su = handler.stream_unary

        async def stream_unary(requests: Any, context: grpc.aio.ServicerContext) -> Any:
            async with around(context, method):
                return await inner_su(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
    inner_ss = handler.stream_stream

    async def stream_stream(requests: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with around(context, method):
            async for item in inner_ss(requests, context):
                yield item

    return grpc.stream_stream_rpc_method_handler(
        stream_stream,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )
