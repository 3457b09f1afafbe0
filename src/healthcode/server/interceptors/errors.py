"""Map exceptions to gRPC statuses: ServiceError keeps its code and details, anything else is
INTERNAL with a generic message (the exception type is logged, never its text: it may hold PII)."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import structlog

from healthcode.common.errors import ServiceError
from healthcode.server.interceptors._wrap import WrappingInterceptor

if TYPE_CHECKING:
    from healthcode.server.interceptors._wrap import Context, Streaming, Unary

log = structlog.get_logger("healthcode.errors")


async def _abort(context: Context, method: str, exc: BaseException) -> None:
    """Abort the call for an exception that is not a gRPC abort (always raises AbortError)."""
    if isinstance(exc, ServiceError):
        await context.abort_with_status(exc.to_grpc_status())
    # Where it happened (file:line:function), never the message or locals: they may hold PII.
    where = [
        f"{Path(frame.filename).name}:{frame.lineno}:{frame.name}"
        for frame in traceback.extract_tb(exc.__traceback__)[-8:]
    ]
    log.error("unhandled error", method=method, error_type=type(exc).__name__, where=where)
    await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class _MapErrors:
    def unary(self, behaviour: Unary, method: str) -> Unary:
        async def mapped(request: Any, context: Context) -> Any:
            try:
                return await behaviour(request, context)
            except (grpc.aio.AbortError, StopAsyncIteration, GeneratorExit):
                raise
            except Exception as exc:
                await _abort(context, method, exc)
                raise  # pragma: no cover - _abort always raises

        return mapped

    def streaming(self, behaviour: Streaming, method: str) -> Streaming:
        async def mapped(request: Any, context: Context) -> AsyncIterator[Any]:
            try:
                async for item in behaviour(request, context):
                    yield item
            except (grpc.aio.AbortError, StopAsyncIteration, GeneratorExit):
                raise
            except Exception as exc:
                await _abort(context, method, exc)

        return mapped


class ErrorInterceptor(WrappingInterceptor):
    """Turns domain exceptions into rich statuses (google.rpc.Status with ErrorInfo)."""

    def __init__(self) -> None:
        super().__init__(_MapErrors())
