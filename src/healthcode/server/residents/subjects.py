"""Which person a resident's call is about: the caller's own person, or one of their dependents.

Other services (CodeService) use :func:`resolve_subject` so the rule lives in one place.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from healthcode.common.errors import FailedPrecondition, NotFound, PermissionDenied
from healthcode.server.common.principal import Principal, Role
from healthcode.server.db.models import Account, Person

MAX_SUBJECT_ID = 64


def profile_required() -> FailedPrecondition:
    """The error for calls that need a registered profile."""
    return FailedPrecondition(
        "PROFILE_REQUIRED", "register a profile (RegisterProfile) before this call"
    )


def own_person(session: Session, principal: Principal) -> Person:
    """The caller's own person; FAILED_PRECONDITION PROFILE_REQUIRED before registration.

    Reads the account row (not the cached principal) so a fresh registration is seen at once.
    """
    if principal.role is not Role.RESIDENT:
        raise PermissionDenied("ROLE_NOT_ALLOWED", "only residents have a personal profile")
    account = session.get(Account, principal.id)
    if account is None or account.person_id is None:
        raise profile_required()
    person = session.get(Person, account.person_id)
    if person is None:
        raise profile_required()
    return person


def resolve_subject(session: Session, principal: Principal, subject_id: str) -> Person:
    """The person a call is about.

    Empty ``subject_id``: the caller's own person (FAILED_PRECONDITION PROFILE_REQUIRED when the
    caller has not registered). Otherwise the caller's own person id or one of their dependents;
    anything else, existing or not, is NOT_FOUND SUBJECT_NOT_FOUND so existence never leaks.
    """
    if not subject_id:
        return own_person(session, principal)
    if principal.role is not Role.RESIDENT:
        raise PermissionDenied("ROLE_NOT_ALLOWED", "only residents act for dependents")
    not_found = NotFound("SUBJECT_NOT_FOUND", "subject_id is not you or one of your dependents")
    if len(subject_id) > MAX_SUBJECT_ID or not (subject_id.isascii() and subject_id.isprintable()):
        raise not_found
    person = session.get(Person, subject_id)
    if person is None or person.guardian_account_id != principal.id:
        raise not_found
    return person


def dependents_of(session: Session, account_id: str, own_person_id: str | None) -> list[Person]:
    """The dependents of an account (persons it is guardian of, except its own), oldest first."""
    stmt = select(Person).where(Person.guardian_account_id == account_id)
    if own_person_id is not None:
        stmt = stmt.where(Person.id != own_person_id)
    return list(session.scalars(stmt.order_by(Person.created_at, Person.id)))
