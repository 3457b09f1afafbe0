"""Finding and creating accounts by phone through the privacy vault (the phone itself is never
stored: ``Account.phone_token`` is the vault token, found again through the vault's blind index)."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from healthcode.common.identity import mask_phone
from healthcode.server.common.principal import Role
from healthcode.server.db.base import new_id
from healthcode.server.db.models import Account
from healthcode.server.platform import Platform
from healthcode.vault.client import TokenizeItem
from healthcode.vault.fields import FieldType


@dataclass(frozen=True)
class PhoneToken:
    """A phone's vault token, its masked form and the account holding it (if any)."""

    token: str
    masked: str
    account_id: str | None


def account_by_phone_token(session: Session, token: str) -> Account | None:
    """The account whose login phone has this vault token."""
    return session.scalars(select(Account).where(Account.phone_token == token)).first()


async def find_phone(platform: Platform, phone: str) -> str | None:
    """The existing vault token of a normalised phone, or None (one LookupByValue)."""
    tokens = await platform.vault.lookup(FieldType.PHONE, [phone])
    return tokens[0] if tokens else None


async def tokenize_phone(platform: Platform, phone: str, subject_id: str) -> tuple[str, str]:
    """Store a phone in the vault for ``subject_id``: (token, masked)."""
    results = await platform.vault.tokenize(
        [TokenizeItem(field_type=FieldType.PHONE, value=phone, subject_id=subject_id)]
    )
    return results[0].token, results[0].masked or mask_phone(phone)


async def find_or_create_account(
    platform: Platform,
    phone: str,
    *,
    role: Role,
    display_name: str = "",
    checkpoint_id: str | None = None,
    division_code: str | None = None,
) -> tuple[Account, bool]:
    """The account of ``phone``, creating it with ``role`` when there is none: (account, created).

    One vault lookup; a tokenize only for a phone the vault has never seen. The account id is the
    vault subject of its phone, so erasing the account's subject erases the phone.
    """
    token = await find_phone(platform, phone)
    if token is not None:
        existing = await platform.db.run(account_by_phone_token, token)
        if existing is not None:
            return existing, False
        masked = mask_phone(phone)
        account_id = new_id()
    else:
        account_id = new_id()
        token, masked = await tokenize_phone(platform, phone, account_id)

    def create(session: Session) -> Account:
        account = Account(
            id=account_id,
            role=role.value,
            phone_token=token,
            masked_phone=masked,
            display_name=display_name,
            checkpoint_id=checkpoint_id,
            division_code=division_code,
            disabled=False,
        )
        session.add(account)
        session.flush()
        return account

    try:
        return await platform.db.run(create), True
    except IntegrityError:
        # Another replica created it concurrently: use theirs.
        raced = await platform.db.run(account_by_phone_token, token)
        if raced is None:
            raise
        return raced, False
