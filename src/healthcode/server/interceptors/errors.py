"""Map exceptions to gRPC statuses: ServiceError keeps its code and details, anything else is
INTERNAL with a generic message (the exception type is logged, never its text: it may hold PII)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
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
        log.error("unhandled error", method=method, error_type=type(exc).__name__)
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
