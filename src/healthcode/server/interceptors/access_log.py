"""A PII-free access log and Prometheus metrics per RPC: method, status code, duration, role.

No request or response content is ever logged; the peer address is logged only as its family.
The access log line is DEBUG: when DEBUG is off for ``healthcode.access`` the event is not even
built (one cached level check per call). Metric children are looked up once per method and code.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
import structlog
from prometheus_client import Counter, Histogram

from healthcode.server.common.principal import open_call_record
from healthcode.server.interceptors._wrap import WrappingInterceptor

if TYPE_CHECKING:
    from healthcode.server.interceptors._wrap import Context, Streaming, Unary

log = structlog.get_logger("healthcode.access")
_std_log = logging.getLogger("healthcode.access")

RPC_COUNT = Counter("healthcode_rpc_total", "RPCs served", ["method", "code"])
RPC_LATENCY = Histogram(
    "healthcode_rpc_seconds",
    "RPC latency",
    ["method"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
_perf = time.perf_counter


def _code_name(code: Any) -> str:
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "OK" if code in (None, 0) else str(code)


class _Recorder:
    """Counts, times and (at DEBUG) logs the calls of one method."""

    __slots__ = ("_counts", "_latency", "_method")

    def __init__(self, method: str) -> None:
        self._method = method
        self._latency = RPC_LATENCY.labels(method)
        self._counts: dict[Any, Any] = {}

    def finish(self, context: Context, start: float, roles: list[str]) -> None:
        elapsed = _perf() - start
        code = context.code()
        counter = self._counts.get(code)
        if counter is None:
            counter = self._counts[code] = RPC_COUNT.labels(self._method, _code_name(code))
        counter.inc()
        self._latency.observe(elapsed)
        if _std_log.isEnabledFor(logging.DEBUG):
            log.debug(
                "rpc",
                method=self._method,
                code=_code_name(code),
                ms=round(elapsed * 1000, 2),
                role=roles[0] if roles else "anonymous",
            )


class _AccessLog:
    def unary(self, behaviour: Unary, method: str) -> Unary:
        finish = _Recorder(method).finish

        async def logged(request: Any, context: Context) -> Any:
            start = _perf()
            roles = open_call_record()
            try:
                return await behaviour(request, context)
            finally:
                finish(context, start, roles)

        return logged

    def streaming(self, behaviour: Streaming, method: str) -> Streaming:
        finish = _Recorder(method).finish

        async def logged(request: Any, context: Context) -> AsyncIterator[Any]:
            start = _perf()
            roles = open_call_record()
            try:
                async for item in behaviour(request, context):
                    yield item
            finally:
                finish(context, start, roles)

        return logged


class AccessLogInterceptor(WrappingInterceptor):
    """Logs and counts every call without its content."""

    def __init__(self) -> None:
        super().__init__(_AccessLog())
