"""A PII-free access log and Prometheus metrics per RPC: method, status code, duration, role.

No request or response content is ever logged; the peer address is logged only as its family.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING

import grpc
import structlog
from prometheus_client import Counter, Histogram

from healthcode.server.common.principal import open_call_record
from healthcode.server.interceptors._wrap import wrap_handler

if TYPE_CHECKING:
    from healthcode.server.interceptors._wrap import Context, Handler

log = structlog.get_logger("healthcode.access")

RPC_COUNT = Counter("healthcode_rpc_total", "RPCs served", ["method", "code"])
RPC_LATENCY = Histogram(
    "healthcode_rpc_seconds",
    "RPC latency",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)


@asynccontextmanager
async def _log_call(context: Context, method: str) -> AsyncIterator[None]:
    start = time.perf_counter()
    roles = open_call_record()
    try:
        yield
    finally:
        elapsed = time.perf_counter() - start
        code = context.code()
        code_name = (
            code.name
            if isinstance(code, grpc.StatusCode)
            else ("OK" if code in (None, 0) else str(code))
        )
        RPC_COUNT.labels(method, code_name).inc()
        RPC_LATENCY.labels(method).observe(elapsed)
        log.debug(
            "rpc",
            method=method,
            code=code_name,
            ms=round(elapsed * 1000, 2),
            role=roles[0] if roles else "anonymous",
        )


class AccessLogInterceptor(grpc.aio.ServerInterceptor):
    """Logs and counts every call without its content."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        return wrap_handler(handler, handler_call_details.method, _log_call)
