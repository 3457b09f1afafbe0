"""Putting a resident's identity into the privacy vault (see :mod:`healthcode.server.identity`).

One vault round trip per request in the normal case: ID number, name and address are tokenized
together with the new person's id as the vault subject. When the ID number is already held by
another subject, name and address are tokenized under that subject instead (a second round trip,
only then), so erasing a person erases all of their values: an existing person (registered at a
gate or by staff, who now installs the app or is added as a dependent), or a listed person whose
id a risk-list import reserved (the new person gets that id).
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from healthcode.common.errors import AlreadyExists
from healthcode.server.db.models import Person
from healthcode.server.identity import Holder, IdentityInput, StoredIdentity, store_identities
from healthcode.server.platform import Platform
from healthcode.server.residents.validation import ValidIdentity

__all__ = ["StoredIdentity", "person_by_id_token", "profile_claimed", "store_identity"]


def profile_claimed() -> AlreadyExists:
    """The identity belongs to a person another account acts for (no PII in the message)."""
    return AlreadyExists(
        "PROFILE_CLAIMED", "this identity is already registered by another account"
    )


def person_by_id_token(session: Session, id_token: str) -> Person | None:
    """The person whose ID number has this vault token."""
    return session.scalars(select(Person).where(Person.id_token == id_token)).first()


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

    ALREADY_EXISTS PROFILE_CLAIMED when the ID number is held by a subject that is no person and
    no risk-list reservation.
    """
    (stored,) = await store_identities(
        platform,
        [
            IdentityInput(
                id_number=identity.id_number,
                name=identity.name,
                kind=identity.kind,
                address=address,
                fields=(f"{prefix}.id_number", f"{prefix}.name", address_field, "phone"),
            )
        ],
        subject_ids=[new_subject_id],
        lookup_first=False,
        refresh_person=True,
    )
    if stored.holder is Holder.UNKNOWN:
        raise profile_claimed()
    return stored
