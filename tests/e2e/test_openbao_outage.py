"""OpenBao stops mid-run: verification keeps working, personal-data paths answer UNAVAILABLE, and
everything recovers when OpenBao returns, without restarting the vault or the server."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from healthcode_sdk._gen.healthcode.v1 import (
    auth_service_pb2,
    code_service_pb2,
    common_pb2,
    resident_service_pb2,
    verification_service_pb2,
)

from healthcode.common.errors import error_info
from healthcode.server.common.principal import Role
from tests.fixtures import people
from tests.fixtures.openbao import OpenBao
from tests.fixtures.platform import Stack, start_stack, stop_stack

pytestmark = pytest.mark.openbao


@pytest.fixture
def transit_stack(
    request: pytest.FixtureRequest, tmp_path: Path, openbao_restartable: OpenBao
) -> Iterator[tuple[Stack, OpenBao]]:
    bao = openbao_restartable
    stack = start_stack(
        tmp_path,
        "sqlite",
        f"sqlite:///{tmp_path / 'server' / 'server.sqlite3'}",
        f"sqlite:///{tmp_path / 'vault' / 'vault.sqlite3'}",
        vault_settings={
            "backend": "transit",
            "transit_addr": bao.url,
            "transit_token": bao.token,
            "backend_check_interval": 0.2,
            "transit_timeout": 1.0,
        },
    )
    try:
        yield stack, bao
    finally:
        stop_stack(stack)


def test_openbao_outage_and_recovery(transit_stack: tuple[Stack, OpenBao]) -> None:
    stack, bao = transit_stack
    resident, _, _ = stack.resident()
    code = resident.codes.IssueCode(code_service_pb2.IssueCodeRequest()).code.code
    checkpoint = stack.checkpoint("510402")
    staff, _ = stack.official(Role.STAFF, division="510402", checkpoint_id=checkpoint)

    bao.stop()
    time.sleep(0.5)  # past the vault's backend probe interval

    # Code verification and code issuing never touch the vault: they keep working.
    ok = staff.verification.VerifyCode(
        verification_service_pb2.VerifyCodeRequest(code=code, request_id="outage-1")
    )
    assert ok.color == common_pb2.CODE_COLOR_GREEN
    assert ok.passage_id
    again = resident.codes.IssueCode(code_service_pb2.IssueCodeRequest()).code
    assert again.code.startswith("JKM1:")

    # Paths that need personal data answer UNAVAILABLE with a clear reason, and write nothing.
    newcomer = people.person()
    anon = stack.client()
    anon.auth.SendLoginCode(auth_service_pb2.SendLoginCodeRequest(phone=newcomer.phone))
    login = auth_service_pb2.LoginRequest(
        phone=newcomer.phone, code=stack.login_code(newcomer.phone)
    )
    with pytest.raises(grpc.RpcError) as failed:
        anon.auth.Login(login)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE
    info = error_info(failed.value)
    assert info is not None and info.reason in {"KEY_BACKEND_UNAVAILABLE", "KEY_BACKEND_SEALED"}
    dependent = people.person()
    with pytest.raises(grpc.RpcError) as failed_dep:
        resident.residents.AddDependent(
            resident_service_pb2.AddDependentRequest(
                request_id="dep-outage",
                identity=resident_service_pb2.PersonIdentity(
                    name=dependent.name, id_number=dependent.id_number
                ),
                relationship="父亲",
            )
        )
    assert failed_dep.value.code() == grpc.StatusCode.UNAVAILABLE
    assert (
        len(
            resident.residents.ListDependents(
                resident_service_pb2.ListDependentsRequest()
            ).dependents
        )
        == 0
    )

    # OpenBao comes back: the same processes serve personal-data paths again.
    bao.start()
    deadline = time.monotonic() + 20
    while True:
        try:
            token = anon.auth.Login(login).access_token  # the same SMS code still works
            break
        except grpc.RpcError as err:
            if err.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() > deadline:
                raise
            time.sleep(0.3)
    registered = (
        stack.client(token)
        .residents.RegisterProfile(
            resident_service_pb2.RegisterProfileRequest(
                request_id="after-outage",
                identity=resident_service_pb2.PersonIdentity(
                    name=newcomer.name, id_number=newcomer.id_number
                ),
                division_code=newcomer.division_code,
                address=newcomer.address,
            )
        )
        .profile
    )
    assert registered.subject_id
    added = resident.residents.AddDependent(
        resident_service_pb2.AddDependentRequest(
            request_id="dep-after",
            identity=resident_service_pb2.PersonIdentity(
                name=dependent.name, id_number=dependent.id_number
            ),
            relationship="父亲",
        )
    ).dependent
    assert added.identity.masked_id_number.endswith(dependent.id_number[-2:])
