"""Creating staff and official accounts: the first administrator (``healthcode admin bootstrap``)
and AdminService.CreateStaffAccount both go through :func:`create_staff_account`."""

from __future__ import annotations

from sqlalchemy.orm import Session

from healthcode.common.errors import AlreadyExists, FieldViolation, InvalidArgument, NotFound
from healthcode.common.identity import PANZHIHUA_DIVISIONS, is_valid_division, normalize_phone
from healthcode.server.auth.accounts import find_or_create_account
from healthcode.server.common.principal import Role
from healthcode.server.db.models import Checkpoint
from healthcode.server.platform import Platform

#: Roles an administrator may create with a phone login (service accounts have no phone).
STAFF_ROLES = frozenset(
    {Role.STAFF, Role.DISTRICT_ADMIN, Role.HEALTH_AUTHORITY, Role.SECURITY_OFFICER}
)
MAX_DISPLAY_NAME = 32


def _checkpoint_division(session: Session, checkpoint_id: str) -> str | None:
    checkpoint = session.get(Checkpoint, checkpoint_id)
    return None if checkpoint is None else checkpoint.division_code


async def create_staff_account(  # noqa: PLR0917 - positional signature is the contract
    platform: Platform,
    phone: str,
    display_name: str,
    role: Role,
    checkpoint_id: str | None = None,
    division_code: str | None = None,
) -> str:
    """Create (or find) the account of a staff member or official; returns the account id.

    Validation errors name the CreateStaffAccountRequest fields (``phone``, ``display_name``,
    ``role``, ``checkpoint_id``, ``division_code``). Staff need a checkpoint (their division is
    the checkpoint's when not given); district admins need a division. The phone goes to the
    vault. ALREADY_EXISTS (ACCOUNT_EXISTS) when the phone already has an account with another
    role; the same call repeated returns the same account id.
    """
    violations: list[FieldViolation] = []
    normalized = normalize_phone(phone)
    if normalized is None:
        violations.append(FieldViolation("phone", "must be a Chinese mobile number"))
    name = " ".join(display_name.split())
    if not name or len(name) > MAX_DISPLAY_NAME or not name.isprintable():
        violations.append(
            FieldViolation("display_name", f"must be 1-{MAX_DISPLAY_NAME} printable characters")
        )
    if role not in STAFF_ROLES:
        violations.append(
            FieldViolation(
                "role", "must be staff, district admin, health authority or security officer"
            )
        )
    checkpoint_id = checkpoint_id or None
    division_code = division_code or None
    if division_code is not None and not is_valid_division(division_code):
        violations.append(FieldViolation("division_code", "must be a six-digit GB/T 2260 code"))
    if role is Role.STAFF and checkpoint_id is None:
        violations.append(FieldViolation("checkpoint_id", "is required for staff"))
    if role is Role.DISTRICT_ADMIN and division_code is None:
        violations.append(FieldViolation("division_code", "is required for district admins"))
    if violations:
        fields = ", ".join(v.field for v in violations)
        raise InvalidArgument("INVALID_ARGUMENT", f"invalid {fields}", violations=violations)
    assert normalized is not None
    if checkpoint_id is not None:
        cp_division = await platform.db.run(_checkpoint_division, checkpoint_id)
        if cp_division is None:
            raise NotFound("CHECKPOINT_NOT_FOUND", "the checkpoint does not exist")
        if division_code is None:
            division_code = cp_division
        elif division_code != cp_division:
            raise InvalidArgument(
                "INVALID_ARGUMENT",
                "invalid division_code",
                violations=[
                    FieldViolation("division_code", "must be the division of the checkpoint")
                ],
            )
    account, _created = await find_or_create_account(
        platform,
        normalized,
        role=role,
        display_name=name,
        checkpoint_id=checkpoint_id,
        division_code=division_code,
    )
    if account.role != role.value:
        raise AlreadyExists("ACCOUNT_EXISTS", "this phone already has an account with another role")
    return account.id


async def bootstrap_admin(
    platform: Platform, phone: str, display_name: str, role: Role = Role.HEALTH_AUTHORITY
) -> str:
    """Create the first administrator (city-wide health authority by default); returns its id.

    Safe to run again: the same phone returns the same account.
    """
    division = "510400" if role is Role.DISTRICT_ADMIN else None
    if role is Role.DISTRICT_ADMIN:
        assert division in PANZHIHUA_DIVISIONS
    return await create_staff_account(platform, phone, display_name, role, None, division)
