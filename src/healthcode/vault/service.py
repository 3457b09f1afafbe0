"""gRPC servicers: VaultService and AuditService (protos in proto/healthcode/vault/v1).

Handlers convert messages, run the synchronous core in the vault's thread pool and turn
failures into rich statuses: ServiceError as itself, a lost database as UNAVAILABLE
(DATABASE_UNAVAILABLE), anything else as INTERNAL with nothing but the exception type logged.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import functools
import json
import struct
from collections.abc import AsyncIterator, Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import grpc
import structlog
from google.protobuf.timestamp_pb2 import Timestamp
from healthcode_sdk._gen.healthcode.vault.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    vault_pb2,
    vault_service_pb2,
    vault_service_pb2_grpc,
)
from sqlalchemy import and_, select
from sqlalchemy.exc import DBAPIError, OperationalError

from healthcode.common.errors import FieldViolation, ServiceError, Unavailable
from healthcode.vault import audit as audit_mod
from healthcode.vault.audit import Action, AuditRecord, EventRow, Outcome, RootRow
from healthcode.vault.auth import Caller, Role
from healthcode.vault.core import TokenizeInput, VaultCore
from healthcode.vault.errors import DOMAIN, invalid_fields
from healthcode.vault.fields import FieldType, Purpose, is_token
from healthcode.vault.interceptors import current_caller
from healthcode.vault.models import audit_events

log = structlog.get_logger(__name__)
T = TypeVar("T")

_FIELD_FROM_PB = {
    vault_pb2.FIELD_TYPE_ID_NUMBER: FieldType.ID_NUMBER,
    vault_pb2.FIELD_TYPE_PHONE: FieldType.PHONE,
    vault_pb2.FIELD_TYPE_NAME: FieldType.NAME,
    vault_pb2.FIELD_TYPE_ADDRESS: FieldType.ADDRESS,
}
FIELD_TO_PB = {v: k for k, v in _FIELD_FROM_PB.items()}
_PURPOSE_FROM_PB = {
    vault_pb2.PURPOSE_EPIDEMIOLOGICAL_INVESTIGATION: Purpose.EPIDEMIOLOGICAL_INVESTIGATION,
    vault_pb2.PURPOSE_CORRECTION_REVIEW: Purpose.CORRECTION_REVIEW,
    vault_pb2.PURPOSE_DATA_SUBJECT_REQUEST: Purpose.DATA_SUBJECT_REQUEST,
    vault_pb2.PURPOSE_IDENTITY_VERIFICATION: Purpose.IDENTITY_VERIFICATION,
    vault_pb2.PURPOSE_PROVINCIAL_MUTUAL_RECOGNITION: Purpose.PROVINCIAL_MUTUAL_RECOGNITION,
}
PURPOSE_TO_PB = {v: k for k, v in _PURPOSE_FROM_PB.items()}
_ACTION_TO_PB = {a: audit_service_pb2.AuditAction.Value(f"AUDIT_ACTION_{a.value}") for a in Action}
_ACTION_FROM_PB = {v: k for k, v in _ACTION_TO_PB.items()}
_OUTCOME_TO_PB = {
    o: audit_service_pb2.AuditOutcome.Value(f"AUDIT_OUTCOME_{o.value}") for o in Outcome
}
_OUTCOME_FROM_PB = {v: k for k, v in _OUTCOME_TO_PB.items()}
_ID_CHARS = 128


def _caller() -> Caller:
    caller = current_caller.get()
    if caller is None:  # the interceptor always sets it; defensive for direct use
        raise ServiceError(
            grpc.StatusCode.UNAUTHENTICATED,
            "UNAUTHENTICATED",
            "no authenticated caller",
            domain=DOMAIN,
        )
    return caller


def _request_id(value: str, name: str = "request_id") -> str:
    if len(value) > _ID_CHARS or not value.isprintable():
        raise invalid_fields([FieldViolation(name, "must be up to 128 printable characters")])
    return value


def rpc(fn: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
    """Translate exceptions of a unary handler into statuses."""

    @functools.wraps(fn)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> T:
        try:
            return await fn(self, request, context)
        except ServiceError as exc:
            await context.abort_with_status(exc.to_grpc_status())
        except (OperationalError, DBAPIError) as exc:
            log.error("vault.database.error", error_type=type(exc).__name__, method=fn.__name__)
            err = Unavailable(
                "DATABASE_UNAVAILABLE", "the vault database is unavailable", domain=DOMAIN
            )
            await context.abort_with_status(err.to_grpc_status())
        raise AssertionError("unreachable")  # abort_with_status raises

    return wrapper


class _Base:
    def __init__(self, core: VaultCore, executor: ThreadPoolExecutor) -> None:
        self.core = core
        self._executor = executor

    async def run(self, fn: Callable[[], T]) -> T:
        """Run blocking work in the vault's pool, keeping the contextvars."""
        loop = asyncio.get_running_loop()
        context = contextvars.copy_context()
        return await loop.run_in_executor(self._executor, functools.partial(context.run, fn))


class VaultServicer(_Base, vault_service_pb2_grpc.VaultServiceServicer):
    """healthcode.vault.v1.VaultService."""

    @rpc
    async def TokenizeBatch(
        self, request: vault_service_pb2.TokenizeBatchRequest, context: Any
    ) -> vault_service_pb2.TokenizeBatchResponse:
        caller = _caller()
        bad = [
            FieldViolation(f"items[{i}].field_type", "must name a field type")
            for i, it in enumerate(request.items)
            if it.field_type not in _FIELD_FROM_PB
        ]
        if bad:
            raise invalid_fields(bad)
        request_id = _request_id(request.request_id)
        items = [
            TokenizeInput(_FIELD_FROM_PB[it.field_type], it.value, it.subject_id)
            for it in request.items
        ]
        results = await self.run(lambda: self.core.tokenize(caller, items, request_id))
        response = vault_service_pb2.TokenizeBatchResponse()
        add = response.results.add
        for r in results:
            add(token=r.token, masked=r.masked, created=r.created)
        return response

    @rpc
    async def DetokenizeBatch(
        self, request: vault_service_pb2.DetokenizeBatchRequest, context: Any
    ) -> vault_service_pb2.DetokenizeBatchResponse:
        caller = _caller()
        purpose = _PURPOSE_FROM_PB.get(request.purpose)
        request_id = _request_id(request.request_id)
        tokens = list(request.tokens)
        out = await self.run(
            lambda: self.core.detokenize(caller, tokens, purpose, request.reference, request_id)
        )
        response = vault_service_pb2.DetokenizeBatchResponse(policy_version=out.policy_version)
        field_types = map(FIELD_TO_PB.__getitem__, out.field_types)
        if request.columns:  # three extends, no message per item
            columns = response.columns
            columns.values.extend(out.values)
            columns.masked.extend(out.masked)
            columns.field_types.extend(field_types)
            return response
        # ``values.add`` fills the repeated field in place: about 2.5x faster than building
        # DetokenizedValue messages and copying them into the response (upb).
        add = response.values.add
        for token, value, masked, field_type in zip(
            out.tokens,
            out.values,
            out.masked,
            field_types,
            strict=True,
        ):
            add(token=token, value=value, masked=masked, field_type=field_type)
        return response

    @rpc
    async def LookupByValue(
        self, request: vault_service_pb2.LookupByValueRequest, context: Any
    ) -> vault_service_pb2.LookupByValueResponse:
        caller = _caller()
        field_type = _FIELD_FROM_PB.get(request.field_type)
        values = list(request.values)
        found = await self.run(lambda: self.core.lookup(caller, field_type, values))
        return vault_service_pb2.LookupByValueResponse(
            results=[
                vault_service_pb2.LookupResult(found=t is not None, token=t or "") for t in found
            ]
        )

    @rpc
    async def MaskBatch(
        self, request: vault_service_pb2.MaskBatchRequest, context: Any
    ) -> vault_service_pb2.MaskBatchResponse:
        caller = _caller()
        tokens = list(request.tokens)
        masked = await self.run(lambda: self.core.mask(caller, tokens))
        return vault_service_pb2.MaskBatchResponse(
            values=[
                vault_service_pb2.MaskedValue(token=t, masked=m, field_type=FIELD_TO_PB[f])
                for t, m, f in masked
            ]
        )

    @rpc
    async def Erase(
        self, request: vault_service_pb2.EraseRequest, context: Any
    ) -> vault_service_pb2.EraseResponse:
        caller = _caller()
        request_id = _request_id(request.request_id)
        subjects = list(request.subject_ids)
        n_subjects, n_tokens = await self.run(
            lambda: self.core.erase(caller, subjects, request.reference, request_id)
        )
        return vault_service_pb2.EraseResponse(
            erased_subject_count=n_subjects, erased_token_count=n_tokens
        )

    @rpc
    async def RotateKeys(
        self, request: vault_service_pb2.RotateKeysRequest, context: Any
    ) -> vault_service_pb2.RotateKeysResponse:
        caller = _caller()
        version, outdated = await self.run(lambda: self.core.rotate(caller, request.reference))
        return vault_service_pb2.RotateKeysResponse(
            current_version=version, outdated_data_keys=outdated
        )

    @rpc
    async def Rewrap(
        self, request: vault_service_pb2.RewrapRequest, context: Any
    ) -> vault_service_pb2.RewrapResponse:
        caller = _caller()
        result = await self.run(
            lambda: self.core.rewrap(caller, request.limit, request.retire_old_versions)
        )
        return vault_service_pb2.RewrapResponse(
            rewrapped_count=result.rewrapped,
            remaining_count=result.remaining,
            current_version=result.current_version,
            min_decryption_version=result.min_decryption_version,
        )


def _ts(us: int) -> Timestamp:
    return Timestamp(seconds=us // 1_000_000, nanos=(us % 1_000_000) * 1000)


def _pb_action(name: str) -> audit_service_pb2.AuditAction.ValueType:
    try:
        return _ACTION_TO_PB[Action(name)]
    except ValueError:
        return audit_service_pb2.AUDIT_ACTION_UNSPECIFIED


def _pb_outcome(name: str) -> audit_service_pb2.AuditOutcome.ValueType:
    try:
        return _OUTCOME_TO_PB[Outcome(name)]
    except ValueError:
        return audit_service_pb2.AUDIT_OUTCOME_UNSPECIFIED


def _pb_purpose(name: str) -> vault_pb2.Purpose.ValueType:
    try:
        return PURPOSE_TO_PB[Purpose(name)]
    except ValueError:
        return vault_pb2.PURPOSE_UNSPECIFIED


def _pb_fields(names: tuple[str, ...]) -> list[vault_pb2.FieldType.ValueType]:
    out = []
    for name in names:
        try:
            out.append(FIELD_TO_PB[FieldType(name)])
        except (TypeError, ValueError):  # only a tampered row holds something else
            out.append(vault_pb2.FIELD_TYPE_UNSPECIFIED)
    return out


def _pb_strings(items: tuple[Any, ...]) -> list[str]:
    """Stored list items as strings (anything else only occurs in a tampered row: as JSON)."""
    return [i if isinstance(i, str) else json.dumps(i) for i in items]


def event_to_pb(event: EventRow) -> audit_service_pb2.AccessEvent:
    """An audit row as a message (with its canonical content for independent checks)."""
    return audit_service_pb2.AccessEvent(
        sequence=event.seq,
        event_id=event.event_id,
        occur_time=_ts(event.occurred_at),
        caller=event.caller,
        caller_role=event.caller_role,
        action=_pb_action(event.action),
        purpose=_pb_purpose(event.purpose),
        outcome=_pb_outcome(event.outcome),
        reason=event.reason,
        tokens=_pb_strings(event.tokens),
        subject_ids=_pb_strings(event.subject_ids),
        field_types=_pb_fields(event.field_types),
        reference=event.reference,
        request_id=event.request_id,
        policy_version=event.policy_version,
        prev_hash=event.prev_hash,
        hash=event.hash,
        signature=event.signature,
        key_id=event.key_id,
        canonical_content=event.canonical(),
    )


def root_to_pb(root: RootRow) -> audit_service_pb2.SignedRoot:
    """A signed root as a message."""
    return audit_service_pb2.SignedRoot(
        sequence=root.seq,
        head_hash=root.head_hash,
        sign_time=_ts(root.signed_at),
        key_id=root.key_id,
        signature=root.signature,
        statement=root.statement,
    )


def _page_token(last_id: int) -> str:
    return base64.urlsafe_b64encode(b"v1" + struct.pack(">q", last_id)).decode()


def _parse_page_token(token: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(token.encode())
        if len(raw) != 10 or raw[:2] != b"v1":
            raise ValueError
        return int(struct.unpack(">q", raw[2:])[0])
    except (ValueError, TypeError) as exc:
        raise invalid_fields(
            [FieldViolation("page_token", "is not a token from a previous response")]
        ) from exc


class AuditServicer(_Base, audit_service_pb2_grpc.AuditServiceServicer):
    """healthcode.vault.v1.AuditService (security officers only)."""

    def _officer(self, action: str) -> Caller:
        caller = _caller()
        if caller.role is not Role.SECURITY_OFFICER:
            self.core.audit.record(
                self.core.engine,
                AuditRecord(
                    caller=caller.name,
                    caller_role=caller.role.value,
                    action=Action.AUDIT_READ,
                    outcome=Outcome.DENIED,
                    reason="ROLE_DENIED",
                    reference=action,
                ),
            )
            from healthcode.common.errors import PermissionDenied

            raise PermissionDenied(
                "ROLE_DENIED", "only security officers may read the audit log", domain=DOMAIN
            )
        return caller

    def _log_read(self, caller: Caller, what: str) -> None:
        self.core.audit.record(
            self.core.engine,
            AuditRecord(
                caller=caller.name,
                caller_role=caller.role.value,
                action=Action.AUDIT_READ,
                outcome=Outcome.ALLOWED,
                reference=what,
            ),
        )

    @rpc
    async def ListAccessEvents(
        self, request: audit_service_pb2.ListAccessEventsRequest, context: Any
    ) -> audit_service_pb2.ListAccessEventsResponse:
        caller = await self.run(lambda: self._officer("ListAccessEvents"))
        violations = []
        if request.page_size < 0:
            violations.append(FieldViolation("page_size", "must not be negative"))
        if (
            request.HasField("start_time")
            and request.HasField("end_time")
            and (request.end_time.ToMicroseconds() <= request.start_time.ToMicroseconds())
        ):
            violations.append(FieldViolation("end_time", "must be after start_time"))
        if violations:
            raise invalid_fields(violations)
        size = min(request.page_size or 100, 1000)
        after = _parse_page_token(request.page_token) if request.page_token else 0
        conds = [audit_events.c.id > after]
        if request.caller:
            conds.append(audit_events.c.caller == request.caller)
        if request.purpose:
            purpose = _PURPOSE_FROM_PB.get(request.purpose)
            conds.append(audit_events.c.purpose == (purpose.value if purpose else "?"))
        if request.action:
            action = _ACTION_FROM_PB.get(request.action)
            conds.append(audit_events.c.action == (action.value if action else "?"))
        if request.outcome:
            outcome = _OUTCOME_FROM_PB.get(request.outcome)
            conds.append(audit_events.c.outcome == (outcome.value if outcome else "?"))
        if request.HasField("start_time"):
            conds.append(audit_events.c.occurred_at >= request.start_time.ToMicroseconds())
        if request.HasField("end_time"):
            conds.append(audit_events.c.occurred_at < request.end_time.ToMicroseconds())
        if request.token and not is_token(request.token):
            raise invalid_fields([FieldViolation("token", "is not a vault token")])
        if request.token:
            conds.append(audit_mod.events_with_token(request.token))

        def query() -> tuple[list[EventRow], bool]:
            if request.token:
                while self.core.audit.index_tokens(self.core.engine):
                    pass
            with self.core.engine.connect() as conn:
                rows = conn.execute(
                    select(audit_events)
                    .where(and_(*conds))
                    .order_by(audit_events.c.id)
                    .limit(size + 1)
                ).all()
            events = [audit_mod._event_from_row(r) for r in rows[:size]]
            self._log_read(caller, "ListAccessEvents")
            return events, len(rows) > size

        events, more = await self.run(query)
        return audit_service_pb2.ListAccessEventsResponse(
            events=[event_to_pb(e) for e in events],
            next_page_token=_page_token(events[-1].row_id) if more and events else "",
        )

    @rpc
    async def VerifyAuditLog(
        self, request: audit_service_pb2.VerifyAuditLogRequest, context: Any
    ) -> audit_service_pb2.VerifyAuditLogResponse:
        caller = await self.run(lambda: self._officer("VerifyAuditLog"))

        def verify() -> audit_mod.VerifyReport:
            public = {self.core.audit.signer.key_id: self.core.audit.signer.public}
            report = audit_mod.verify_database(self.core.engine, public)
            self._log_read(caller, "VerifyAuditLog")
            return report

        report = await self.run(verify)
        kinds = {
            k: audit_service_pb2.FindingKind.Value(f"FINDING_KIND_{k.value}")
            for k in audit_mod.FindingKind
        }
        return audit_service_pb2.VerifyAuditLogResponse(
            ok=report.ok,
            event_count=report.event_count,
            root_count=report.root_count,
            findings=[
                audit_service_pb2.AuditFinding(
                    kind=kinds[f.kind],
                    sequence=f.seq,
                    last_sequence=f.last_seq,
                    row_id=f.row_id,
                    description=f.description,
                )
                for f in report.findings
            ],
            latest_root=root_to_pb(report.latest_root) if report.latest_root else None,
            unrooted_event_count=report.unrooted,
        )

    @rpc
    async def GetSignedRoot(
        self, request: audit_service_pb2.GetSignedRootRequest, context: Any
    ) -> audit_service_pb2.GetSignedRootResponse:
        caller = await self.run(lambda: self._officer("GetSignedRoot"))

        def sign() -> RootRow | None:
            self.core.audit.sign_root(self.core.engine)
            with self.core.engine.connect() as conn:
                roots = audit_mod.read_roots(conn)
            self._log_read(caller, "GetSignedRoot")
            return roots[-1] if roots else None

        root = await self.run(sign)
        return audit_service_pb2.GetSignedRootResponse(
            root=root_to_pb(root) if root else None,
            public_key=audit_mod.public_raw(self.core.audit.signer.public),
        )

    async def ExportAuditLog(
        self,
        request: audit_service_pb2.ExportAuditLogRequest,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> AsyncIterator[audit_service_pb2.ExportAuditLogResponse]:
        try:
            caller = await self.run(lambda: self._officer("ExportAuditLog"))
            if request.start_sequence < 0:
                raise invalid_fields([FieldViolation("start_sequence", "must not be negative")])
            await self.run(lambda: self._log_read(caller, "ExportAuditLog"))
        except ServiceError as exc:
            await context.abort_with_status(exc.to_grpc_status())
            return
        public = audit_mod.public_raw(self.core.audit.signer.public)
        queue: asyncio.Queue[list[EventRow] | None] = asyncio.Queue(maxsize=4)
        loop = asyncio.get_running_loop()

        def produce() -> None:
            with self.core.engine.connect() as conn:
                chunk: list[EventRow] = []
                for event in audit_mod.read_events(conn, request.start_sequence):
                    chunk.append(event)
                    if len(chunk) == 500:
                        asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
                        chunk = []
                if chunk:
                    asyncio.run_coroutine_threadsafe(queue.put(chunk), loop).result()
            asyncio.run_coroutine_threadsafe(queue.put(None), loop).result()

        producer = loop.run_in_executor(self._executor, produce)
        first = True
        while (chunk := await queue.get()) is not None:
            yield audit_service_pb2.ExportAuditLogResponse(
                events=[event_to_pb(e) for e in chunk], public_key=public if first else b""
            )
            first = False
        await producer

        def roots() -> list[RootRow]:
            with self.core.engine.connect() as conn:
                return audit_mod.read_roots(conn)

        yield audit_service_pb2.ExportAuditLogResponse(
            roots=[root_to_pb(r) for r in await self.run(roots)],
            public_key=public if first else b"",
        )
