"""Staff and official accounts: ``bootstrap_admin`` (CLI) and ``create_staff_account``
(AdminService.CreateStaffAccount), with a real vault."""

from __future__ import annotations

import pytest
from healthcode_sdk._gen.healthcode.v1 import auth_service_pb2 as pb
from healthcode_sdk._gen.healthcode.v1 import common_pb2
from sqlalchemy.orm import Session

from healthcode.common.errors import AlreadyExists, InvalidArgument, NotFound
from healthcode.server.auth.bootstrap import bootstrap_admin, create_staff_account
from healthcode.server.common.principal import Role
from healthcode.server.db.models import Account, Checkpoint
from tests.fixtures import people
from tests.server.auth.stack import Stack, bearer


async def test_bootstrap_admin_logs_in_as_health_authority(stack: Stack) -> None:
    phone = people.phone()
    account_id = await bootstrap_admin(stack.platform, phone, "卫健委 管理员")
    assert await bootstrap_admin(stack.platform, phone, "卫健委 管理员") == account_id
    login = await stack.login(phone)
    assert login.account_id == account_id
    assert login.role == common_pb2.ROLE_HEALTH_AUTHORITY
    who = await stack.auth.GetSession(pb.GetSessionRequest(), metadata=bearer(login.access_token))
    assert who.display_name == "卫健委 管理员"
    row = await stack.db.run(lambda s: s.get(Account, account_id))
    assert phone not in (row.phone_token or "")


async def test_staff_account_bound_to_checkpoint(stack: Stack) -> None:
    def add_checkpoint(s: Session) -> str:
        cp = Checkpoint(name="仁和区卡口", division_code="510411")
        s.add(cp)
        s.flush()
        return cp.id

    checkpoint_id = await stack.db.run(add_checkpoint)
    phone = people.phone()
    account_id = await create_staff_account(
        stack.platform, phone, "测温员 甲", Role.STAFF, checkpoint_id, None
    )
    login = await stack.login(phone)
    assert login.account_id == account_id
    who = await stack.auth.GetSession(pb.GetSessionRequest(), metadata=bearer(login.access_token))
    assert who.role == common_pb2.ROLE_STAFF
    assert who.checkpoint_id == checkpoint_id
    assert who.division_code == "510411"


async def test_staff_account_rules(stack: Stack) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await create_staff_account(stack.platform, "123", "", Role.STAFF, None, "5104")
    assert {v.field for v in caught.value.violations} == {
        "phone",
        "display_name",
        "checkpoint_id",
        "division_code",
    }
    with pytest.raises(InvalidArgument) as caught:
        await create_staff_account(stack.platform, people.phone(), "某人", Role.RESIDENT)
    assert [v.field for v in caught.value.violations] == ["role"]
    with pytest.raises(NotFound):
        await create_staff_account(stack.platform, people.phone(), "某人", Role.STAFF, "f" * 32)
    resident_phone = people.phone()
    await stack.login(resident_phone)
    with pytest.raises(AlreadyExists) as exists:
        await create_staff_account(
            stack.platform, resident_phone, "某人", Role.DISTRICT_ADMIN, None, "510402"
        )
    assert exists.value.reason == "ACCOUNT_EXISTS"
    assert await stack.count(Account) == 1
