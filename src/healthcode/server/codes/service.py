"""CodeService: dynamic codes for residents (self or dependents) and printed offline codes.

A code carries the person's *current* colour (status rules), the masked name and ID number from
the Person row (no vault call), and a random ``cti`` remembered in ``issued_codes`` so online
verification finds the person. Signing and the row insert share one unit of work; the QR symbol
(PNG and SVG, segno) is rendered afterwards on a worker thread, outside the transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from typing import TYPE_CHECKING, Any

import grpc
from healthcode_sdk._gen.healthcode.v1 import code_service_pb2 as pb
from healthcode_sdk._gen.healthcode.v1 import code_service_pb2_grpc as pb_grpc
from sqlalchemy.orm import Session

from healthcode.codes import CodeIssuer, CodeKind, Colour, render_png, render_svg
from healthcode.common.errors import NotFound, Unavailable, invalid
from healthcode.server.codes.store import remember_code
from healthcode.server.common import idempotency
from healthcode.server.common.convert import to_timestamp
from healthcode.server.common.principal import Principal, Role, current_principal
from healthcode.server.db.base import utcnow
from healthcode.server.db.models import Person
from healthcode.server.residents.subjects import resolve_subject
from healthcode.server.status.rules import current_color
from healthcode.server.verification.unit import run_unit

Ctx = grpc.aio.ServicerContext[Any, Any]

if TYPE_CHECKING:
    from healthcode.server.platform import Platform

ISSUE_OFFLINE_METHOD = "/healthcode.v1.CodeService/IssueOfflineCode"
MAX_SUBJECT_ID = 64


def _issue(  # noqa: PLR0917 - unit of work, called positionally via Database.run
    session: Session,
    issuer: CodeIssuer,
    principal: Principal,
    person: Person,
    kind: CodeKind,
    ttl: int | None,
) -> pb.IssuedCode:
    now = utcnow()
    color = current_color(session, person, now)
    try:
        issued = issuer.issue(
            colour=Colour(color),
            masked_name=person.masked_name,
            masked_id=person.masked_id_number,
            kind=kind,
            now=now.timestamp(),
            ttl=ttl,
        )
    except ValueError as exc:  # the key's signing window ran out without a rotation
        raise Unavailable("SIGNING_KEY_UNAVAILABLE", "no signing key is active; retry") from exc
    claims = issued.claims
    remember_code(session, claims, person_id=person.id, kid=issuer.key.kid, issued_by=principal.id)
    return pb.IssuedCode(
        code=issued.code,
        color=int(claims.colour),  # type: ignore[arg-type]
        kind=int(claims.kind),  # type: ignore[arg-type]
        issue_time=to_timestamp(dt.datetime.fromtimestamp(claims.issued_at, tz=dt.UTC)),
        expire_time=to_timestamp(dt.datetime.fromtimestamp(claims.expires_at, tz=dt.UTC)),
        kid=issuer.key.kid.hex(),
    )


def _issue_dynamic(
    session: Session, issuer: CodeIssuer, principal: Principal, subject_id: str
) -> pb.IssuedCode:
    person = resolve_subject(session, principal, subject_id)
    return _issue(session, issuer, principal, person, CodeKind.DYNAMIC, None)


def _offline_subject(session: Session, principal: Principal, subject_id: str) -> Person:
    if principal.role is Role.RESIDENT:
        return resolve_subject(session, principal, subject_id)
    not_found = NotFound("SUBJECT_NOT_FOUND", "subject_id is not a person of your jurisdiction")
    if not (subject_id.isascii() and subject_id.isprintable()):
        raise not_found
    person = session.get(Person, subject_id)
    if person is None or not principal.can_see_division(person.division_code):
        raise not_found
    return person


def _issue_offline(
    session: Session,
    issuer: CodeIssuer,
    principal: Principal,
    request: pb.IssueOfflineCodeRequest,
    days: int,
) -> pb.IssueOfflineCodeResponse:
    def work() -> pb.IssueOfflineCodeResponse:
        person = _offline_subject(session, principal, request.subject_id)
        code = _issue(session, issuer, principal, person, CodeKind.PRINTED, days * 86400)
        return pb.IssueOfflineCodeResponse(code=code)

    return idempotency.once(
        session, principal.id, ISSUE_OFFLINE_METHOD, request, pb.IssueOfflineCodeResponse, work
    )


def _render(code: pb.IssuedCode) -> None:
    code.qr_png = render_png(code.code)
    code.qr_svg = render_svg(code.code)


class CodeService(pb_grpc.CodeServiceServicer):
    """healthcode.v1.CodeService."""

    def __init__(self, platform: Platform) -> None:
        self._db = platform.db
        self._keys = platform.keys
        self._settings = platform.settings

    async def IssueCode(self, request: pb.IssueCodeRequest, context: Ctx) -> pb.IssueCodeResponse:
        """A dynamic code for the caller (empty subject_id) or one of their dependents."""
        principal = current_principal()
        if len(request.subject_id) > MAX_SUBJECT_ID:
            raise invalid("subject_id", f"must be at most {MAX_SUBJECT_ID} characters")
        issuer = await self._keys.signer()
        code = await run_unit(self._db, _issue_dynamic, issuer, principal, request.subject_id)
        await asyncio.get_running_loop().run_in_executor(None, _render, code)
        return pb.IssueCodeResponse(code=code)

    async def IssueOfflineCode(
        self, request: pb.IssueOfflineCodeRequest, context: Ctx
    ) -> pb.IssueOfflineCodeResponse:
        """A printed code valid 1-7 days (0 = the maximum); idempotent by request_id."""
        principal = current_principal()
        idempotency.check_request_id(request.request_id)
        max_days = self._settings.offline_code_max_days
        days = request.validity_days or max_days
        if not 1 <= days <= max_days:
            raise invalid("validity_days", f"must be 0 (= {max_days}) or 1 to {max_days}")
        if len(request.subject_id) > MAX_SUBJECT_ID:
            raise invalid("subject_id", f"must be at most {MAX_SUBJECT_ID} characters")
        if principal.role is not Role.RESIDENT and not request.subject_id:
            raise invalid("subject_id", "is required")
        issuer = await self._keys.signer()
        response = await run_unit(self._db, _issue_offline, issuer, principal, request, days)
        await asyncio.get_running_loop().run_in_executor(None, _render, response.code)
        return response
