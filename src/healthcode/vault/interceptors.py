"""Server interceptor: authenticate every vault call (bearer credential or mTLS identity).

The authenticated :class:`~healthcode.vault.auth.Caller` is put in :data:`current_caller` inside
the handler's own task. Health checking and reflection stay open so that load balancers and
grpcurl work. Unauthenticated calls fail with UNAUTHENTICATED and never reach a handler.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import grpc
import structlog

from healthcode.common.errors import Unauthenticated
from healthcode.vault.auth import Caller, CredentialVerifier, Role
from healthcode.vault.errors import DOMAIN

log = structlog.get_logger(__name__)

current_caller: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "current_caller", default=None
)

_OPEN = ("/grpc.health.v1.Health/", "/grpc.reflection.")


def _bearer(metadata: Any) -> str | None:
    for key, value in metadata or ():
        if key == "authorization" and isinstance(value, str) and value[:7].lower() == "bearer ":
            return value[7:].strip() or None
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates and records the caller for the handler."""

    def __init__(self, verifier: CredentialVerifier, mtls_identities: Mapping[str, str]) -> None:
        self._verifier = verifier
        self._mtls = {cn: Role(role) for cn, role in mtls_identities.items()}

    async def _authenticate(self, context: grpc.aio.ServicerContext[Any, Any]) -> Caller:
        credential = _bearer(context.invocation_metadata())
        if credential is not None:
            caller = await asyncio.to_thread(self._verifier.verify, credential)
            if caller is not None:
                return caller
            raise Unauthenticated("UNAUTHENTICATED", "the credential is not valid", domain=DOMAIN)
        names = context.auth_context().get("x509_common_name", [])
        for raw in names:
            cn = raw.decode("utf-8", "replace")
            if cn in self._mtls:
                return Caller(name=f"mtls:{cn}", role=self._mtls[cn])
        raise Unauthenticated(
            "UNAUTHENTICATED",
            "a bearer credential or client certificate is required",
            domain=DOMAIN,
        )

    async def intercept_service(
        self,
        continuation: Callable[
            [grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler[Any, Any] | None]
        ],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler[Any, Any] | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method or ""
        if handler is None or method.startswith(_OPEN):
            return handler
        auth = self._authenticate

        if handler.unary_unary is not None:
            inner_uu: Any = handler.unary_unary

            async def unary_unary(request: Any, context: Any) -> Any:
                try:
                    caller = await auth(context)
                except Unauthenticated as exc:
                    log.info("vault.auth.rejected", method=method)
                    await context.abort_with_status(exc.to_grpc_status())
                    raise  # unreachable: abort raises
                current_caller.set(caller)
                return await inner_uu(request, context)

            return grpc.unary_unary_rpc_method_handler(
                unary_unary,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream is not None:
            inner_us: Any = handler.unary_stream

            async def unary_stream(request: Any, context: Any) -> Any:
                try:
                    caller = await auth(context)
                except Unauthenticated as exc:
                    await context.abort_with_status(exc.to_grpc_status())
                    raise
                current_caller.set(caller)
                async for item in inner_us(request, context):
                    yield item

            return grpc.unary_stream_rpc_method_handler(
                unary_stream,
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
        return handler
