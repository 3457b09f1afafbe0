"""Map exceptions to gRPC statuses: ServiceError keeps its code and details, anything else is
INTERNAL with a generic message (the exception type is logged, never its text: it may hold PII)."""

from __future__ import annotations

import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import structlog

from healthcode.common.errors import ServiceError
from healthcode.server.interceptors._wrap import wrap_handler

if TYPE_CHECKING:
    from healthcode.server.interceptors._wrap import Context, Handler

log = structlog.get_logger("healthcode.errors")


@asynccontextmanager
async def _map_errors(context: Context, method: str) -> AsyncIterator[None]:
    try:
        yield
    except ServiceError as err:
        await context.abort_with_status(err.to_grpc_status())
    except (grpc.aio.AbortError, StopAsyncIteration, GeneratorExit):
        raise
    except Exception as exc:
        # Where it happened (file:line:function), never the message or locals: they may hold PII.
        where = [
            f"{Path(frame.filename).name}:{frame.lineno}:{frame.name}"
            for frame in traceback.extract_tb(exc.__traceback__)[-8:]
        ]
        log.error("unhandled error", method=method, error_type=type(exc).__name__, where=where)
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Turns domain exceptions into rich statuses (google.rpc.Status with ErrorInfo)."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        return wrap_handler(handler, handler_call_details.method, _map_errors)
