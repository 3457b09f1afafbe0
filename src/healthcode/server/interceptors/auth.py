"""Authentication and role authorisation for every call, from the table in ``auth.policy``.

The bearer token comes in the ``authorization`` metadata (``Bearer <token>``). Unknown methods are
refused (fail closed). The resolved :class:`Principal` is bound in a context variable for the
handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Protocol

import grpc

from healthcode.common.errors import PermissionDenied, Unauthenticated
from healthcode.server.auth.policy import allowed_roles
from healthcode.server.common.principal import Principal, reset_principal, set_principal
from healthcode.server.interceptors._wrap import wrap_handler

if TYPE_CHECKING:
    from healthcode.server.interceptors._wrap import Around, Context, Handler


class Authenticator(Protocol):
    """Resolves a bearer token to a principal (None when unknown, expired or revoked)."""

    async def authenticate(self, token: str) -> Principal | None:
        """Look the token up."""
        ...


def bearer_token(context: Context) -> str | None:
    """The bearer token of the call, if any."""
    for key, value in context.invocation_metadata() or ():
        if key == "authorization" and isinstance(value, str):
            scheme, _, token = value.partition(" ")
            if scheme.lower() == "bearer" and token:
                return token.strip()
    return None


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Authenticates the caller and checks its role against the method's allowed roles."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    def _around(self) -> Around:
        authenticator = self._authenticator

        @asynccontextmanager
        async def around(context: Context, method: str) -> AsyncIterator[None]:
            roles = allowed_roles(method)
            if roles is None:
                raise PermissionDenied("METHOD_NOT_ALLOWED", "this method is not available")
            token = bearer_token(context)
            principal = await authenticator.authenticate(token) if token else None
            if roles:  # not public
                if principal is None:
                    raise Unauthenticated("UNAUTHENTICATED", "this call needs a valid access token")
                if principal.role not in roles:
                    raise PermissionDenied(
                        "ROLE_NOT_ALLOWED", f"role {principal.role.value} may not call this method"
                    )
            bound = set_principal(principal)
            try:
                yield
            finally:
                reset_principal(bound)

        return around

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Handler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Handler | None:
        handler = await continuation(handler_call_details)
        return wrap_handler(handler, handler_call_details.method, self._around())
