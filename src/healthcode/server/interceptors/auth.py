"""Authentication and role authorisation for every call, from the table in ``auth.policy``.

The bearer token comes in the ``authorization`` metadata (``Bearer <token>``). Unknown methods are
refused (fail closed). The resolved :class:`Principal` is bound in a context variable for the
handler.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Protocol

from healthcode.common.errors import PermissionDenied, Unauthenticated
from healthcode.server.auth.policy import allowed_roles
from healthcode.server.common.principal import Principal, Role, reset_principal, set_principal
from healthcode.server.interceptors._wrap import WrappingInterceptor

if TYPE_CHECKING:
    from healthcode.server.interceptors._wrap import Context, Streaming, Unary


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


class _Authenticate:
    """Resolve the caller, check the method's roles, bind the principal for the call."""

    def __init__(self, authenticator: Authenticator) -> None:
        self._authenticator = authenticator

    async def _principal(self, context: Context, roles: frozenset[Role] | None) -> Principal | None:
        if roles is None:
            raise PermissionDenied("METHOD_NOT_ALLOWED", "this method is not available")
        token = bearer_token(context)
        principal = await self._authenticator.authenticate(token) if token else None
        if roles:  # not public
            if principal is None:
                raise Unauthenticated("UNAUTHENTICATED", "this call needs a valid access token")
            if principal.role not in roles:
                raise PermissionDenied(
                    "ROLE_NOT_ALLOWED", f"role {principal.role.value} may not call this method"
                )
        return principal

    def unary(self, behaviour: Unary, method: str) -> Unary:
        roles = allowed_roles(method)
        resolve = self._principal

        async def authenticated(request: Any, context: Context) -> Any:
            bound = set_principal(await resolve(context, roles))
            try:
                return await behaviour(request, context)
            finally:
                reset_principal(bound)

        return authenticated

    def streaming(self, behaviour: Streaming, method: str) -> Streaming:
        roles = allowed_roles(method)
        resolve = self._principal

        async def authenticated(request: Any, context: Context) -> AsyncIterator[Any]:
            bound = set_principal(await resolve(context, roles))
            try:
                async for item in behaviour(request, context):
                    yield item
            finally:
                reset_principal(bound)

        return authenticated


class AuthInterceptor(WrappingInterceptor):
    """Authenticates the caller and checks its role against the method's allowed roles."""

    def __init__(self, authenticator: Authenticator) -> None:
        super().__init__(_Authenticate(authenticator))
