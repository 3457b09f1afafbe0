"""Each interceptor on a real grpc.aio server with a tiny generic service (bytes in, bytes out)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from healthcode.common.errors import FieldViolation, InvalidArgument, error_info, field_violations
from healthcode.server.common.principal import Principal, Role, current_principal
from healthcode.server.interceptors import AccessLogInterceptor, AuthInterceptor, ErrorInterceptor
from healthcode.server.interceptors.access_log import RPC_COUNT

# Reuse real method names so the role table applies: GetSession is for any role, Login is public,
# ListDependents is for residents only.
ANY_ROLE = "/healthcode.v1.AuthService/GetSession"
PUBLIC = "/healthcode.v1.AuthService/Login"
RESIDENT_ONLY = "/healthcode.v1.ResidentService/ListDependents"
UNKNOWN = "/healthcode.v1.AuthService/NoSuchMethod"


class _Tokens:
    async def authenticate(self, token: str) -> Principal | None:
        roles = {"staff-token": Role.STAFF, "resident-token": Role.RESIDENT}
        role = roles.get(token)
        return Principal(id=f"acct-{token}", role=role, session_id="s") if role else None


Behaviour = Callable[[bytes, Any], Awaitable[bytes]]


async def _start(behaviour: Behaviour) -> tuple[grpc.aio.Server, int]:
    def handler() -> grpc.RpcMethodHandler[bytes, bytes]:
        return grpc.unary_unary_rpc_method_handler(behaviour)

    class Generic(grpc.GenericRpcHandler):
        def service(self, details: grpc.HandlerCallDetails) -> Any:
            return handler()

    server = grpc.aio.server(
        interceptors=[AccessLogInterceptor(), ErrorInterceptor(), AuthInterceptor(_Tokens())]
    )
    server.add_generic_rpc_handlers((Generic(),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    return server, port


async def _call(port: int, method: str, token: str | None = None) -> bytes:
    metadata = (("authorization", f"Bearer {token}"),) if token else None
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        result: bytes = await channel.unary_unary(method)(b"ping", metadata=metadata, timeout=5)
        return result


@pytest.fixture
async def echo_role() -> AsyncIterator[int]:
    async def behaviour(request: bytes, context: Any) -> bytes:
        try:
            return current_principal().role.value.encode()
        except Exception:  # anonymous on a public method
            return b"anonymous"

    server, port = await _start(behaviour)
    yield port
    await server.stop(None)


async def test_auth_binds_principal_and_enforces_roles(echo_role: int) -> None:
    assert await _call(echo_role, ANY_ROLE, "staff-token") == b"staff"
    assert await _call(echo_role, PUBLIC) == b"anonymous"
    assert await _call(echo_role, RESIDENT_ONLY, "resident-token") == b"resident"
    with pytest.raises(grpc.aio.AioRpcError) as no_token:
        await _call(echo_role, ANY_ROLE)
    assert no_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as bad_token:
        await _call(echo_role, ANY_ROLE, "forged")
    assert bad_token.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as wrong_role:
        await _call(echo_role, RESIDENT_ONLY, "staff-token")
    assert wrong_role.value.code() == grpc.StatusCode.PERMISSION_DENIED
    with pytest.raises(grpc.aio.AioRpcError) as unknown:
        await _call(echo_role, UNKNOWN, "staff-token")
    assert unknown.value.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_service_errors_keep_reason_and_fields() -> None:
    async def behaviour(request: bytes, context: Any) -> bytes:
        raise InvalidArgument(
            "BAD_THING",
            "invalid profile.id_number",
            violations=[FieldViolation("profile.id_number", "bad")],
        )

    server, port = await _start(behaviour)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(port, PUBLIC)
    finally:
        await server.stop(None)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # The aio error carries the rich status in its trailing metadata; read it the sync way.
    sync_err = _as_sync(err.value)
    info = error_info(sync_err)
    assert info is not None and info.reason == "BAD_THING"
    assert field_violations(sync_err) == ["profile.id_number"]


async def test_unexpected_errors_are_internal_without_details(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.ERROR)

    async def behaviour(request: bytes, context: Any) -> bytes:
        raise RuntimeError("secret-value-510402199001011234")

    server, port = await _start(behaviour)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await _call(port, PUBLIC)
    finally:
        await server.stop(None)
    assert err.value.code() == grpc.StatusCode.INTERNAL
    assert err.value.details() == "internal error"
    logged = caplog.text + " ".join(str(r.msg) for r in caplog.records)
    assert "RuntimeError" in logged and "test_interceptors.py" in logged
    assert "secret-value" not in logged


async def test_access_log_counts_calls_by_code(echo_role: int) -> None:
    before = RPC_COUNT.labels(ANY_ROLE, "UNAUTHENTICATED")._value.get()
    with pytest.raises(grpc.aio.AioRpcError):
        await _call(echo_role, ANY_ROLE)
    assert RPC_COUNT.labels(ANY_ROLE, "UNAUTHENTICATED")._value.get() == before + 1


class _SyncView(grpc.RpcError):
    def __init__(self, err: grpc.aio.AioRpcError) -> None:
        self._err = err

    def code(self) -> grpc.StatusCode:
        return self._err.code()

    def details(self) -> str | None:
        return self._err.details()

    def trailing_metadata(self) -> Any:
        return self._err.trailing_metadata()


def _as_sync(err: grpc.aio.AioRpcError) -> Any:
    return _SyncView(err)
