"""People's identities in the privacy vault: who holds an ID number, and the person it becomes.

The server's convention is that a person's vault subject id is their ``Person.id``: erasing the
subject erases every value of that person. The vault refuses to give an ID number (or phone)
held by one subject to another (``VALUE_HELD_BY_OTHER_SUBJECT``), so every entry point that
creates a person must use the subject that already holds the ID number. The holder of an ID-number
token is, in this order:

``PERSON``
    a person of this server (``Person.id_token``): the subject is ``Person.id``;
``RESERVED``
    a listed person the platform did not know when a risk list was imported: the import
    tokenized the ID number under a freshly reserved person id, kept on the risk-list entries
    (``RiskListEntry.subject_id``). The person is created with exactly that id (and name and
    address are tokenized under it), so the risk-list rule matches them from the start and
    erasing them erases the ID number too;
``UNKNOWN``
    a subject the server has neither a person nor a reservation for (cannot become a person);
``NEW``
    nobody: the values are tokenized under the new person's id.

Round trips: a registration in the app tokenizes first (ONE round trip when the person is new);
a gate looks up first (ONE round trip when the person is known) and tokenizes only unknown
people. Everything else (a known value in the app, a reserved person) costs one more round trip.

Reservations of people who never register are erased by retention
(:func:`erase_expired_reservations`, ADR 0003).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

import structlog
from sqlalchemy import exists, select, update
from sqlalchemy.orm import Session, aliased

from healthcode.common.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    Unavailable,
    invalid,
)
from healthcode.common.identity import IdKind, mask_id_number
from healthcode.server.db.base import new_id, utcnow
from healthcode.server.db.models import Person
from healthcode.server.status.models import RiskListEntry
from healthcode.vault.client import TokenizeItem, TokenResult
from healthcode.vault.fields import FieldType

if TYPE_CHECKING:
    from healthcode.server.platform import Platform

log = structlog.get_logger("healthcode.identity")

HELD_BY_OTHER = "VALUE_HELD_BY_OTHER_SUBJECT"
#: Retention is erasing the reserved subject that holds this ID number; retry shortly.
RESERVATION_RELEASING = "RESERVATION_RELEASING"
#: Values per vault request (the vault's default ``max_batch``).
VAULT_BATCH = 1000
#: Tokenize attempts when concurrent registrations keep taking values (then UNAVAILABLE).
MAX_ATTEMPTS = 3
_GREEN = 1


class Holder(StrEnum):
    """Who holds an identity's ID number in the vault (see the module docstring)."""

    NEW = "NEW"
    PERSON = "PERSON"
    RESERVED = "RESERVED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True)
class IdentityInput:
    """Validated, normalised identity values (plaintext, held only until tokenized)."""

    id_number: str
    name: str
    kind: IdKind
    address: str = ""
    phone: str = ""
    #: Request field paths of id_number, name, address and phone (for vault refusals).
    fields: tuple[str, str, str, str] = (
        "identity.id_number",
        "identity.name",
        "address",
        "phone",
    )


@dataclass(frozen=True)
class StoredIdentity:
    """Vault tokens and masked forms of one identity, and the person id to use."""

    #: The vault subject holding the ID number: the id of the (existing or new) person.
    #: "" when the holder is UNKNOWN.
    subject_id: str
    holder: Holder
    id_token: str
    masked_id_number: str
    kind: IdKind
    #: None when nothing was tokenized (a known person at a gate).
    name_token: str | None = None
    masked_name: str = ""
    address_token: str | None = None
    masked_address: str = ""
    phone_token: str | None = None
    masked_phone: str = ""

    @property
    def existing(self) -> bool:
        """True when the ID number belonged to an existing person."""
        return self.holder is Holder.PERSON


def releasing() -> Unavailable:
    """The error while retention erases the reservation holding an ID number."""
    return Unavailable(
        RESERVATION_RELEASING, "this identity is being released by retention; retry shortly"
    )


# -- database side ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TokenHolder:
    """The server's holder of an ID-number token."""

    holder: Holder
    subject_id: str = ""
    #: True when retention is erasing the reservation (RESERVED only).
    releasing: bool = False


def token_holders(session: Session, id_tokens: Sequence[str]) -> dict[str, TokenHolder]:
    """Holders of ID-number tokens: persons first, then risk-list reservations; UNKNOWN else."""
    unique = list(dict.fromkeys(id_tokens))
    out: dict[str, TokenHolder] = {}
    for start in range(0, len(unique), 500):
        chunk = unique[start : start + 500]
        for person_id, token in session.execute(
            select(Person.id, Person.id_token).where(Person.id_token.in_(chunk))
        ):
            out[token] = TokenHolder(Holder.PERSON, person_id)
        rows = session.execute(
            select(RiskListEntry.id_token, RiskListEntry.subject_id, RiskListEntry.released_at)
            .where(RiskListEntry.id_token.in_(chunk), RiskListEntry.subject_id.is_not(None))
            .order_by(RiskListEntry.created_at)
        )
        for token, subject_id, released_at in rows:
            assert subject_id is not None
            known = out.get(token)
            if known is None or (known.holder is Holder.RESERVED and known.releasing):
                out[token] = TokenHolder(Holder.RESERVED, subject_id, released_at is not None)
    for token in unique:
        out.setdefault(token, TokenHolder(Holder.UNKNOWN))
    return out


def claim_reservation(session: Session, subject_id: str) -> None:
    """Lock the risk-list entries reserving ``subject_id`` for this unit of work.

    Retention marks entries (``released_at``) before erasing their subject; the row locks order a
    registration (or import) and that marking, so a subject that becomes a person (or is listed
    again) is never erased. UNAVAILABLE RESERVATION_RELEASING when retention got there first.
    """
    rows = session.execute(
        select(RiskListEntry.released_at)
        .where(RiskListEntry.subject_id == subject_id)
        .with_for_update()
    ).all()
    if not rows or any(released is not None for (released,) in rows):
        raise releasing()


def create_person(
    session: Session,
    stored: StoredIdentity,
    *,
    division_code: str,
    managed: bool,
    now: dt.datetime,
) -> Person | None:
    """A new person with ``id`` = the vault subject holding the ID number (not yet recomputed).

    None when the holder cannot become a new person (an existing person or an UNKNOWN subject, or
    nothing was tokenized): the caller answers with its own error.
    """
    if stored.holder not in (Holder.NEW, Holder.RESERVED) or stored.name_token is None:
        return None
    if stored.holder is Holder.RESERVED:
        claim_reservation(session, stored.subject_id)
    person = Person(
        id=stored.subject_id,
        id_token=stored.id_token,
        name_token=stored.name_token,
        address_token=stored.address_token,
        phone_token=stored.phone_token,
        id_type=stored.kind.value,
        masked_name=stored.masked_name,
        masked_id_number=stored.masked_id_number,
        masked_address=stored.masked_address,
        masked_phone=stored.masked_phone,
        division_code=division_code,
        managed=managed,
        color=_GREEN,
        created_at=now,
        status_updated_at=now,
    )
    session.add(person)
    return person


# -- vault side ------------------------------------------------------------------------------------


def _remap(err: InvalidArgument, fields: Sequence[str]) -> InvalidArgument:
    """A vault INVALID_ARGUMENT re-raised with this request's field paths."""
    violations = []
    for v in err.violations:
        name = v.field
        head = v.field.split(".", 1)[0]
        if head.startswith("items[") and head.endswith("]"):
            index = int(head[6:-1])
            if 0 <= index < len(fields):
                name = fields[index]
        violations.append(FieldViolation(name, v.description))
    if not violations:
        violations = [FieldViolation(fields[0] if fields else "request", "refused by the vault")]
    names = ", ".join(dict.fromkeys(v.field for v in violations))
    return InvalidArgument("INVALID_ARGUMENT", f"invalid {names}", violations=violations)


async def _lookup(platform: Platform, values: Sequence[str], field: str) -> list[str | None]:
    out: list[str | None] = []
    for start in range(0, len(values), VAULT_BATCH):
        chunk = values[start : start + VAULT_BATCH]
        try:
            out.extend(await platform.vault.lookup(FieldType.ID_NUMBER, chunk))
        except InvalidArgument as err:
            raise _remap(err, [field] * len(chunk)) from None
    return out


@dataclass
class _Plan:
    index: int
    subject_id: str
    holder: Holder
    #: Position of the first item (ID number when ``holder`` is NEW, else the name).
    first: int


async def store_identities(
    platform: Platform,
    inputs: Sequence[IdentityInput],
    *,
    subject_ids: Sequence[str] | None = None,
    lookup_first: bool,
    refresh_person: bool,
) -> list[StoredIdentity]:
    """Put identities into the vault under the subject that holds (or will hold) each ID number.

    ``subject_ids``: the ids of new persons (default: fresh ids). ``lookup_first``: look the ID
    numbers up first (gates, where most people are known) instead of tokenizing directly (the
    app, where most are new). ``refresh_person``: also tokenize name/address/phone of existing
    persons (a resident re-entering them); else a known person costs no tokenize. The same ID
    number twice in ``inputs`` is stored once (the first one's values) and answered twice.

    Errors: INVALID_ARGUMENT (request field paths) when the vault refuses a value, INVALID_ARGUMENT
    on the phone field when the phone belongs to another subject, UNAVAILABLE when the vault or
    a retention release is in the way.
    """
    subjects = list(subject_ids) if subject_ids is not None else [new_id() for _ in inputs]
    first: dict[str, int] = {}
    for index, ident in enumerate(inputs):
        first.setdefault(ident.id_number, index)
    unique = list(first.values())
    stored = await _store_unique(
        platform,
        [inputs[i] for i in unique],
        subject_ids=[subjects[i] for i in unique],
        lookup_first=lookup_first,
        refresh_person=refresh_person,
    )
    by_number = {inputs[i].id_number: s for i, s in zip(unique, stored, strict=True)}
    return [by_number[ident.id_number] for ident in inputs]


def _plan(  # noqa: PLR0917 - internal step of _store_unique
    inputs: Sequence[IdentityInput],
    subjects: Sequence[str],
    held: dict[int, str],
    owners: dict[str, TokenHolder],
    done: dict[int, StoredIdentity],
    refresh_person: bool,
) -> tuple[list[TokenizeItem], list[str], list[_Plan]]:
    """The tokenize items of the identities not done yet; settles those needing none."""
    items: list[TokenizeItem] = []
    fields: list[str] = []
    plans: list[_Plan] = []
    for index, ident in enumerate(inputs):
        if index in done:
            continue
        token = held.get(index)
        if token is None:
            plan = _Plan(index, subjects[index], Holder.NEW, len(items))
            items.append(TokenizeItem(FieldType.ID_NUMBER, ident.id_number, plan.subject_id))
            fields.append(ident.fields[0])
        else:
            owner = owners[token]
            if owner.holder is Holder.UNKNOWN or (
                owner.holder is Holder.PERSON and not refresh_person
            ):
                done[index] = StoredIdentity(
                    subject_id=owner.subject_id,
                    holder=owner.holder,
                    id_token=token,
                    masked_id_number=mask_id_number(ident.id_number),
                    kind=ident.kind,
                )
                continue
            if owner.releasing:
                raise releasing()
            plan = _Plan(index, owner.subject_id, owner.holder, len(items))
        plans.append(plan)
        for field_type, value, path in (
            (FieldType.NAME, ident.name, ident.fields[1]),
            (FieldType.ADDRESS, ident.address, ident.fields[2]),
            (FieldType.PHONE, ident.phone, ident.fields[3]),
        ):
            if value:
                items.append(TokenizeItem(field_type, value, plan.subject_id))
                fields.append(path)
    return items, fields, plans


async def _store_unique(
    platform: Platform,
    inputs: Sequence[IdentityInput],
    *,
    subject_ids: Sequence[str],
    lookup_first: bool,
    refresh_person: bool,
) -> list[StoredIdentity]:
    """:func:`store_identities` of distinct ID numbers."""
    subjects = list(subject_ids)
    held: dict[int, str] = {}
    if lookup_first and inputs:
        found = await _lookup(platform, [i.id_number for i in inputs], inputs[0].fields[0])
        held = {i: token for i, token in enumerate(found) if token is not None}
    done: dict[int, StoredIdentity] = {}
    for _attempt in range(MAX_ATTEMPTS):
        owners = (
            await platform.db.run(token_holders, [held[i] for i in held if i not in done])
            if any(i not in done for i in held)
            else {}
        )
        items, fields, plans = _plan(inputs, subjects, held, owners, done, refresh_person)
        if not items:
            break
        try:
            results = await platform.vault.tokenize(items)
        except InvalidArgument as err:
            raise _remap(err, fields) from None
        except FailedPrecondition as err:
            if err.reason != HELD_BY_OTHER:
                raise
            at = int(err.metadata.get("index", "-1"))
            kind = items[at].field_type if 0 <= at < len(items) else None
            if kind is FieldType.PHONE:
                raise invalid(fields[at], "is already registered to another person") from None
            # The ID number is held already (a known person in the app, or someone registered
            # meanwhile): take the holder's token, or look up every new value again.
            fresh = [p.index for p in plans if p.holder is Holder.NEW]
            token = err.metadata.get("token", "")
            if len(fresh) == 1 and token and kind is FieldType.ID_NUMBER:
                held[fresh[0]] = token
                continue
            found = await _lookup(
                platform, [inputs[i].id_number for i in fresh], inputs[0].fields[0]
            )
            held.update({i: t for i, t in zip(fresh, found, strict=True) if t is not None})
            continue
        for plan in plans:
            done[plan.index] = _stored(inputs[plan.index], plan, results, held)
        break
    if len(done) != len(inputs):
        raise Unavailable("IDENTITY_CONTENDED", "the identity changed concurrently; retry")
    return [done[i] for i in range(len(inputs))]


def _stored(
    ident: IdentityInput, plan: _Plan, results: list[TokenResult], held: dict[int, str]
) -> StoredIdentity:
    position = plan.first
    if plan.holder is Holder.NEW:
        id_token, masked_id = results[position].token, results[position].masked
        position += 1
    else:
        id_token, masked_id = held[plan.index], mask_id_number(ident.id_number)
    tokens: dict[FieldType, tuple[str, str]] = {}
    for field_type, value in (
        (FieldType.NAME, ident.name),
        (FieldType.ADDRESS, ident.address),
        (FieldType.PHONE, ident.phone),
    ):
        if value:
            tokens[field_type] = (results[position].token, results[position].masked)
            position += 1
    name = tokens.get(FieldType.NAME)
    address = tokens.get(FieldType.ADDRESS)
    phone = tokens.get(FieldType.PHONE)
    return StoredIdentity(
        subject_id=plan.subject_id,
        holder=plan.holder,
        id_token=id_token,
        masked_id_number=masked_id or mask_id_number(ident.id_number),
        kind=ident.kind,
        name_token=name[0] if name else None,
        masked_name=name[1] if name else "",
        address_token=address[0] if address else None,
        masked_address=address[1] if address else "",
        phone_token=phone[0] if phone else None,
        masked_phone=phone[1] if phone else "",
    )


# -- risk lists ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ListedIds:
    """Tokens of a risk list's ID numbers (in input order) and the subjects reserved for them."""

    tokens: list[str]
    #: Token -> person id reserved for a listed person new to the vault.
    reserved: dict[str, str]


async def reserve_id_numbers(
    platform: Platform, values: Sequence[str], field: str = "id_numbers"
) -> ListedIds:
    """Tokens of listed ID numbers: a lookup, then a tokenize of the unknown values only.

    Each unknown value is tokenized under its own freshly reserved person id (its future
    ``Person.id``). Two round trips per 1,000 values; when a value is registered meanwhile
    (VALUE_HELD_BY_OTHER_SUBJECT) the lookup is repeated for the rest and the import goes on.
    """
    found = await _lookup(platform, values, field)
    tokens: dict[str, str] = {v: t for v, t in zip(values, found, strict=True) if t is not None}
    reserved: dict[str, str] = {}
    unknown = [v for v in values if v not in tokens]
    for start in range(0, len(unknown), VAULT_BATCH):
        chunk = unknown[start : start + VAULT_BATCH]
        for _attempt in range(MAX_ATTEMPTS):
            if not chunk:
                break
            subjects = [new_id() for _ in chunk]
            try:
                results = await platform.vault.tokenize(
                    [
                        TokenizeItem(FieldType.ID_NUMBER, v, s)
                        for v, s in zip(chunk, subjects, strict=True)
                    ]
                )
            except InvalidArgument as err:
                raise _remap(err, [field] * len(chunk)) from None
            except FailedPrecondition as err:
                if err.reason != HELD_BY_OTHER:
                    raise
                again = await _lookup(platform, chunk, field)
                tokens.update({v: t for v, t in zip(chunk, again, strict=True) if t is not None})
                chunk = [v for v in chunk if v not in tokens]
                continue
            for value, subject, result in zip(chunk, subjects, results, strict=True):
                tokens[value] = result.token
                reserved[result.token] = subject
            chunk = []
        if chunk:
            raise Unavailable("IDENTITY_CONTENDED", "the list changed concurrently; retry")
    return ListedIds([tokens[v] for v in values], reserved)


def listed_subjects(
    session: Session, id_tokens: Sequence[str], reserved: dict[str, str]
) -> dict[str, str | None]:
    """The ``RiskListEntry.subject_id`` of each listed token, inside the import's unit of work.

    A token reserved by this import keeps its new subject; a token already reserved by an earlier
    import (a listed person still not registered) carries that reservation on, locked against
    retention; a person's token (or an UNKNOWN holder's) gets None.
    """
    owners = token_holders(session, [t for t in id_tokens if t not in reserved])
    out: dict[str, str | None] = {}
    for token in id_tokens:
        if token in reserved:
            out[token] = reserved[token]
            continue
        owner = owners[token]
        if owner.holder is Holder.RESERVED:
            if owner.releasing:
                raise releasing()
            claim_reservation(session, owner.subject_id)
            out[token] = owner.subject_id
        else:
            out[token] = None
    return out


# -- retention -------------------------------------------------------------------------------------


def release_expired_reservations(session: Session, now: dt.datetime) -> list[str]:
    """Mark the reservations retention may erase; returns their subject ids (unit of work 1).

    Candidates are the reserved subjects of expired entries that became no person and are not
    reserved by an unexpired entry. The entries are locked first, then checked again (a fresh
    statement sees whatever a registration or import holding the locks committed), then marked;
    marked ones from an earlier failed run are returned again.
    """
    candidates = list(
        session.execute(
            select(RiskListEntry.subject_id)
            .where(
                RiskListEntry.subject_id.is_not(None),
                RiskListEntry.expires_at < now,
            )
            .with_for_update()
        ).scalars()
    )
    subjects = sorted({s for s in candidates if s is not None})
    if not subjects:
        return []
    live = aliased(RiskListEntry)
    free: list[str] = []
    for start in range(0, len(subjects), 500):
        chunk = subjects[start : start + 500]
        free.extend(
            s
            for s in session.execute(
                select(RiskListEntry.subject_id)
                .where(
                    RiskListEntry.subject_id.in_(chunk),
                    ~exists().where(Person.id == RiskListEntry.subject_id),
                    ~exists().where(
                        live.subject_id == RiskListEntry.subject_id, live.expires_at >= now
                    ),
                )
                .distinct()
            ).scalars()
            if s is not None
        )
    for start in range(0, len(free), 500):
        chunk = free[start : start + 500]
        session.execute(
            update(RiskListEntry)
            .where(RiskListEntry.subject_id.in_(chunk), RiskListEntry.released_at.is_(None))
            .values(released_at=now)
        )
    return sorted(free)


def delete_released(session: Session, subject_ids: Sequence[str]) -> int:
    """Delete the entries of erased reservations (unit of work 2); returns how many."""
    count = 0
    for start in range(0, len(subject_ids), 500):
        chunk = list(subject_ids[start : start + 500])
        rows = session.execute(
            select(RiskListEntry).where(
                RiskListEntry.subject_id.in_(chunk), RiskListEntry.released_at.is_not(None)
            )
        ).scalars()
        for row in rows:
            session.delete(row)
            count += 1
    return count


async def erase_expired_reservations(platform: Platform, now: dt.datetime | None = None) -> int:
    """Erase, in the vault, the reserved subjects of listed people who never registered.

    Runs from the server's housekeeping loop: marks the reservations (one unit of work), erases
    their subjects in one vault call per 1,000, then deletes their entries. If the vault call
    fails the marks stay and the next run erases them. Returns how many subjects were erased.
    """
    now = now or utcnow()
    subjects: list[str] = await platform.db.run(release_expired_reservations, now)
    if not subjects:
        return 0
    for start in range(0, len(subjects), VAULT_BATCH):
        await platform.vault.erase(
            subjects[start : start + VAULT_BATCH], reference="retention:risk-list"
        )
    await platform.db.run(delete_released, subjects)
    log.info("expired risk-list reservations erased", count=len(subjects))
    return len(subjects)


__all__ = [
    "HELD_BY_OTHER",
    "RESERVATION_RELEASING",
    "Holder",
    "IdentityInput",
    "ListedIds",
    "StoredIdentity",
    "claim_reservation",
    "create_person",
    "erase_expired_reservations",
    "listed_subjects",
    "release_expired_reservations",
    "reserve_id_numbers",
    "store_identities",
    "token_holders",
]
