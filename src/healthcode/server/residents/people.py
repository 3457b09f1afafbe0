"""Putting a person's identity into the privacy vault and finding who already holds it.

One vault round trip per request in the normal case: ID number, name and address are tokenized
together with the new person's id as the vault subject. When the ID number is already held by
another subject (a person registered at a gate or by staff, who now installs the app or is added
as a dependent), the name and address are tokenized under that person's subject instead (a second
round trip, only then), so erasing a person erases all of their values.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from healthcode.common.errors import (
    AlreadyExists,
    FieldViolation,
    InvalidArgument,
    ServiceError,
)
from healthcode.common.identity import mask_id_number
from healthcode.server.db.models import Person
from healthcode.server.platform import Platform
from healthcode.server.residents.validation import ValidIdentity
from healthcode.vault.client import TokenizeItem
from healthcode.vault.fields import FieldType

HELD_BY_OTHER = "VALUE_HELD_BY_OTHER_SUBJECT"


def profile_claimed() -> AlreadyExists:
    """The identity belongs to a person another account acts for (no PII in the message)."""
    return AlreadyExists(
        "PROFILE_CLAIMED", "this identity is already registered by another account"
    )


@dataclass(frozen=True)
class StoredIdentity:
    """Vault tokens and masked forms of one person's identity."""

    #: The vault subject of the values: the person id to use (new or existing).
    subject_id: str
    id_token: str
    masked_id_number: str
    name_token: str
    masked_name: str
    address_token: str | None
    masked_address: str
    #: True when the ID number was already held by another (existing) person.
    existing: bool


def person_by_id_token(session: Session, id_token: str) -> Person | None:
    """The person whose ID number has this vault token."""
    return session.scalars(select(Person).where(Person.id_token == id_token)).first()


def _remap(err: InvalidArgument, fields: list[str]) -> InvalidArgument:
    """A vault INVALID_ARGUMENT re-raised with this request's field paths."""
    violations = []
    for v in err.violations:
        name = v.field
        for i, field in enumerate(fields):
            if v.field.startswith(f"items[{i}]"):
                name = field
        violations.append(FieldViolation(name, v.description))
    names = ", ".join(dict.fromkeys(v.field for v in violations)) or "request"
    return InvalidArgument("INVALID_ARGUMENT", f"invalid {names}", violations=violations)


async def _tokenize(
    platform: Platform, values: list[tuple[FieldType, str, str]], subject_id: str
) -> list[tuple[str, str]]:
    items = [
        TokenizeItem(field_type=ft, value=value, subject_id=subject_id) for ft, value, _ in values
    ]
    try:
        results = await platform.vault.tokenize(items)
    except InvalidArgument as err:
        raise _remap(err, [field for _, _, field in values]) from None
    return [(r.token, r.masked) for r in results]


async def store_identity(
    platform: Platform,
    identity: ValidIdentity,
    address: str,
    *,
    new_subject_id: str,
    prefix: str = "identity",
    address_field: str = "address",
) -> StoredIdentity:
    """Tokenize ID number, name and address for ``new_subject_id`` (or the existing holder).

    ALREADY_EXISTS PROFILE_CLAIMED when the ID number is held by a subject that is no person.
    """
    values = [
        (FieldType.ID_NUMBER, identity.id_number, f"{prefix}.id_number"),
        (FieldType.NAME, identity.name, f"{prefix}.name"),
    ]
    if address:
        values.append((FieldType.ADDRESS, address, address_field))
    try:
        results = await _tokenize(platform, values, new_subject_id)
    except ServiceError as err:
        if err.reason != HELD_BY_OTHER:
            raise
        id_token = err.metadata.get("token") or ""
        if not id_token:
            found = await platform.vault.lookup(FieldType.ID_NUMBER, [identity.id_number])
            id_token = (found[0] if found else None) or ""
        holder = await platform.db.run(person_by_id_token, id_token) if id_token else None
        if holder is None:
            raise profile_claimed() from None
        rest = await _tokenize(platform, values[1:], holder.id)
        name_token, masked_name = rest[0]
        address_token, masked_address = rest[1] if address else (None, "")
        return StoredIdentity(
            subject_id=holder.id,
            id_token=id_token,
            masked_id_number=mask_id_number(identity.id_number),
            name_token=name_token,
            masked_name=masked_name,
            address_token=address_token,
            masked_address=masked_address,
            existing=True,
        )
    (id_token, masked_id), (name_token, masked_name) = results[0], results[1]
    address_token, masked_address = results[2] if address else (None, "")
    return StoredIdentity(
        subject_id=new_subject_id,
        id_token=id_token,
        masked_id_number=masked_id,
        name_token=name_token,
        masked_name=masked_name,
        address_token=address_token,
        masked_address=masked_address,
        existing=False,
    )
