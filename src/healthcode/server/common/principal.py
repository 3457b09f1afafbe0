"""Who is calling: the authenticated principal, carried in a context variable per call."""

from __future__ import annotations

import contextvars
from dataclasses import dataclass
from enum import StrEnum

from healthcode_sdk._gen.healthcode.v1 import common_pb2

from healthcode.common.errors import PermissionDenied, Unauthenticated


class Role(StrEnum):
    """Roles of DESIGN.md section 5 (stored lower case in the database)."""

    RESIDENT = "resident"
    STAFF = "staff"
    DISTRICT_ADMIN = "district_admin"
    HEALTH_AUTHORITY = "health_authority"
    SECURITY_OFFICER = "security_officer"
    PARTNER = "partner"
    PROVINCIAL = "provincial"
    DEVICE = "device"

    def to_proto(self) -> common_pb2.Role.ValueType:
        """The proto enum value."""
        return common_pb2.Role.Value(f"ROLE_{self.name}")

    @classmethod
    def from_proto(cls, value: int) -> Role | None:
        """The role for a proto enum value, or None for UNSPECIFIED/unknown."""
        try:
            name = common_pb2.Role.Name(value)  # type: ignore[arg-type]
        except ValueError:
            return None
        member = name.removeprefix("ROLE_")
        return cls.__members__.get(member)


@dataclass(frozen=True)
class Principal:
    """An authenticated caller."""

    #: Account id, or device id for devices.
    id: str
    role: Role
    session_id: str
    checkpoint_id: str | None = None
    division_code: str | None = None
    #: The resident's own person id once registered.
    person_id: str | None = None
    display_name: str = ""

    @property
    def label(self) -> str:
        """What decisions show about this official: display name and role."""
        return f"{self.display_name or self.id[:8]} ({self.role.value})"

    def require_checkpoint(self) -> str:
        """The checkpoint of staff/devices; PERMISSION_DENIED when unbound."""
        if not self.checkpoint_id:
            raise PermissionDenied("NOT_AT_CHECKPOINT", "the caller is not bound to a checkpoint")
        return self.checkpoint_id

    def can_see_division(self, division_code: str) -> bool:
        """Jurisdiction check: city-wide roles see all; bound roles see their division only.

        The city division (``510400``) of a bound account covers every district in the city.
        """
        if self.role in (Role.HEALTH_AUTHORITY, Role.SECURITY_OFFICER, Role.PROVINCIAL):
            return True
        if not self.division_code:
            return False
        if self.division_code.endswith("00"):
            prefix = self.division_code.rstrip("0")
            return division_code.startswith(prefix[:4])
        return division_code == self.division_code


_current: contextvars.ContextVar[Principal | None] = contextvars.ContextVar(
    "healthcode_principal", default=None
)


_call_roles: contextvars.ContextVar[list[str] | None] = contextvars.ContextVar(
    "healthcode_call_role", default=None
)


def open_call_record() -> list[str]:
    """Start recording the caller's role for the access log (outermost interceptor)."""
    record: list[str] = []
    _call_roles.set(record)
    return record


def current_principal() -> Principal:
    """The principal of the call being served; UNAUTHENTICATED when there is none."""
    principal = _current.get()
    if principal is None:
        raise Unauthenticated("UNAUTHENTICATED", "this call needs a valid access token")
    return principal


def maybe_principal() -> Principal | None:
    """The principal of the call, or None for anonymous calls."""
    return _current.get()


def set_principal(principal: Principal | None) -> contextvars.Token[Principal | None]:
    """Bind the principal for the current call (the auth interceptor does this)."""
    record = _call_roles.get()
    if record is not None and principal is not None:
        record.append(principal.role.value)
    return _current.set(principal)


def reset_principal(token: contextvars.Token[Principal | None]) -> None:
    """Undo :func:`set_principal`."""
    _current.reset(token)
