"""Retries, deadlines and call metadata, against a real gRPC server over a socket that fails on
demand (the platform cannot be made to answer UNAVAILABLE for exactly two attempts, so this edge
server stands in for it; tests/sdk/test_client.py uses the real platform)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field

import grpc
import pytest
from healthcode_sdk import (
    AsyncHealthCodeClient,
    DeadlineExceeded,
    HealthCodeClient,
    RetryPolicy,
    Unavailable,
)
from healthcode_sdk._gen.healthcode.v1 import (
    code_service_pb2,
    code_service_pb2_grpc,
    verification_service_pb2,
    verification_service_pb2_grpc,
)


@dataclass
class Script:
    """How many attempts fail with UNAVAILABLE, and what the server saw."""

    failures: int = 0
    delay: float = 0.0
    request_ids: list[str] = field(default_factory=list)
    metadata: list[dict[str, str]] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def attempt(self, method: str, context: grpc.ServicerContext) -> None:
        with self.lock:
            count = self.attempts[method] = self.attempts.get(method, 0) + 1
            self.metadata.append(
                {k: v for k, v in context.invocation_metadata() if isinstance(v, str)}
            )
        if self.delay:
            time.sleep(self.delay)
        if count <= self.failures:
            context.abort(grpc.StatusCode.UNAVAILABLE, "try again")


class _Verification(verification_service_pb2_grpc.VerificationServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def VerifyCode(self, request, context):  # type: ignore[no-untyped-def]
        self.script.request_ids.append(request.request_id)
        self.script.attempt("VerifyCode", context)
        return verification_service_pb2.VerifyCodeResponse(passage_id="p-1")

    def GetTrustList(self, request, context):  # type: ignore[no-untyped-def]
        self.script.attempt("GetTrustList", context)
        return verification_service_pb2.GetTrustListResponse()


class _Codes(code_service_pb2_grpc.CodeServiceServicer):
    def __init__(self, script: Script) -> None:
        self.script = script

    def IssueCode(self, request, context):  # type: ignore[no-untyped-def]
        self.script.attempt("IssueCode", context)
        return code_service_pb2.IssueCodeResponse()


@pytest.fixture
def edge() -> Iterator[tuple[str, Script]]:
    script = Script()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    # Only the RPCs these tests call are implemented; the rest answer UNIMPLEMENTED.
    verification_service_pb2_grpc.add_VerificationServiceServicer_to_server(
        _Verification(script),  # type: ignore[abstract]
        server,
    )
    code_service_pb2_grpc.add_CodeServiceServicer_to_server(
        _Codes(script),  # type: ignore[abstract]
        server,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield f"127.0.0.1:{port}", script
    finally:
        server.stop(grace=None)


def test_retry_safe_write_is_retried_with_one_request_id(edge: tuple[str, Script]) -> None:
    address, script = edge
    script.failures = 2
    with HealthCodeClient(address, token="t0k3n", metadata=[("x-partner", "p1")]) as client:
        assert client.verify_code("JKM1:X").passage_id == "p-1"
    assert script.attempts["VerifyCode"] == 3
    first = script.request_ids[0]
    assert len(first) == 32 and int(first, 16) >= 0
    assert script.request_ids == [first] * 3
    assert all(md["authorization"] == "Bearer t0k3n" for md in script.metadata)
    assert all(md["x-partner"] == "p1" for md in script.metadata)


def test_callers_request_id_is_kept_and_each_call_gets_a_fresh_one(
    edge: tuple[str, Script],
) -> None:
    address, script = edge
    with HealthCodeClient(address) as client:
        client.verify_code("JKM1:X", request_id="scan-7")
        client.verify_code("JKM1:X")
        client.verify_code("JKM1:X")
        # Raw stubs get the same treatment, and the caller's message is not changed.
        request = verification_service_pb2.VerifyCodeRequest(code="JKM1:X")
        client.stubs.verification.VerifyCode(request)
    assert request.request_id == ""
    assert script.request_ids[0] == "scan-7"
    assert len(set(script.request_ids)) == 4
    assert all(script.request_ids)
    assert all("authorization" not in md for md in script.metadata)


def test_reads_give_up_after_max_attempts(edge: tuple[str, Script]) -> None:
    address, script = edge
    script.failures = 10
    with HealthCodeClient(address) as client, pytest.raises(Unavailable) as raised:
        client.get_trust_list()
    assert script.attempts["GetTrustList"] == 4
    assert raised.value.message == "try again"


def test_non_idempotent_call_is_not_retried(edge: tuple[str, Script]) -> None:
    address, script = edge
    script.failures = 1
    with HealthCodeClient(address) as client, pytest.raises(Unavailable):
        client.issue_code()
    assert script.attempts["IssueCode"] == 1


def test_retries_can_be_switched_off(edge: tuple[str, Script]) -> None:
    address, script = edge
    script.failures = 1
    with HealthCodeClient(address, retry=None) as client, pytest.raises(Unavailable):
        client.get_trust_list()
    assert script.attempts["GetTrustList"] == 1
    with HealthCodeClient(address, retry=RetryPolicy(max_attempts=2)) as client:
        client.get_trust_list()
    assert script.attempts["GetTrustList"] == 2


def test_default_deadline_and_per_call_timeout(edge: tuple[str, Script]) -> None:
    address, script = edge
    script.delay = 0.5
    with HealthCodeClient(address, timeout=0.1) as client:
        with pytest.raises(DeadlineExceeded):
            client.get_trust_list()
        with pytest.raises(DeadlineExceeded):
            client.stubs.verification.GetTrustList(verification_service_pb2.GetTrustListRequest())
        client.get_trust_list(timeout=5)  # the call's own timeout wins


async def test_async_client_retries_and_translates(edge: tuple[str, Script]) -> None:
    address, script = edge
    script.failures = 2
    async with AsyncHealthCodeClient(address, token="t0k3n") as client:
        assert (await client.verify_code("JKM1:X")).passage_id == "p-1"
        assert script.attempts["VerifyCode"] == 3
        assert len(set(script.request_ids)) == 1
        assert script.metadata[-1]["authorization"] == "Bearer t0k3n"
        with pytest.raises(Unavailable):
            await client.issue_code()
        with pytest.raises(Unavailable):
            await client.stubs.codes.IssueCode(code_service_pb2.IssueCodeRequest())
    assert script.attempts["IssueCode"] == 2
