"""The vault's operations, independent of gRPC (synchronous; run in worker threads).

Every public method validates first (INVALID_ARGUMENT naming each bad field), checks the key
backend only when keys are needed, does its database work in one transaction, and appends its
audit event in that same transaction, so that nothing is half-written and nothing happens
unaudited. Denials and failures are audited in a transaction of their own before the error is
raised.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Final, TypeVar

import structlog
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from healthcode.common.errors import (
    FailedPrecondition,
    FieldViolation,
    NotFound,
    PermissionDenied,
    ServiceError,
    Unavailable,
)
from healthcode.vault import crypto
from healthcode.vault.audit import Action, AuditLog, AuditRecord, Outcome
from healthcode.vault.auth import Caller, Role
from healthcode.vault.dek_cache import DekCache
from healthcode.vault.errors import DOMAIN, DataLoss, invalid_fields
from healthcode.vault.fields import (
    PREFIX_TYPE,
    SEARCHABLE,
    FieldType,
    Purpose,
    ValueError_,
    are_tokens,
    is_reference,
    is_subject_id,
    is_token,
    mask,
    new_token,
    normalize,
    token_field_type,
)
from healthcode.vault.keys.base import BackendUnavailable, KeyBackend, UnwrapFailure
from healthcode.vault.models import key_material, subject_keys, tokens
from healthcode.vault.policy import Access, PolicyStore

log = structlog.get_logger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class TokenizeInput:
    """One item to tokenize."""

    field_type: FieldType
    value: str
    subject_id: str


@dataclass(frozen=True)
class Tokenized:
    """One tokenize result."""

    token: str
    masked: str
    created: bool


@dataclass(frozen=True)
class Detokenized:
    """A detokenize result: item ``i`` is ``tokens[i]``, its ``values[i]`` (masked when
    ``masked[i]``) and ``field_types[i]``. Parallel lists: no object per item."""

    tokens: Sequence[str]
    values: list[str]
    masked: list[bool]
    field_types: list[FieldType]
    policy_version: int


@dataclass(frozen=True)
class RewrapResult:
    """Progress of a rewrap."""

    rewrapped: int
    remaining: int
    current_version: int
    min_decryption_version: int


#: A ``tokens`` row as reads fetch it: (token, subject_id, ciphertext, masked, erased_at). A
#: plain tuple, the driver's own: hot paths build no object per row.
StoredToken = tuple[str, str, bytes | None, str | None, int | None]
_TOKEN: Final = 0
_SUBJECT: Final = 1
_CIPHERTEXT: Final = 2
_MASKED: Final = 3
_ERASED: Final = 4
_token_of = itemgetter(_TOKEN)
_erased_at_of = itemgetter(_ERASED)
_subject_of = itemgetter(_SUBJECT)


def _now() -> int:
    return time.time_ns() // 1000


class VaultCore:
    """Tokenization, detokenization, lookup, masking, erasure and key management."""

    def __init__(
        self,
        engine: Engine,
        backend: KeyBackend,
        policy: PolicyStore,
        audit: AuditLog,
        *,
        cache: DekCache[AESGCM],
        max_batch: int = 1000,
        backend_check_interval: float = 1.0,
    ) -> None:
        self.engine = engine
        self.backend = backend
        self.policy = policy
        self.audit = audit
        self.cache = cache
        self.max_batch = max_batch
        self._check_interval = backend_check_interval
        self._backend_ok_until = 0.0
        self._backend_lock = threading.Lock()
        self.backend_healthy = True

    # -- key backend gate ------------------------------------------------------------------------

    def ensure_backend(self) -> None:
        """Fail closed while the key backend is sealed or unreachable (probed once per tick)."""
        if time.monotonic() < self._backend_ok_until:
            return
        with self._backend_lock:
            if time.monotonic() < self._backend_ok_until:
                return
            try:
                self.backend.check()
            except BackendUnavailable as exc:
                self._backend_down(exc)
                raise self._unavailable(exc) from exc
            self._backend_up()

    def probe_backend(self) -> bool:
        """Health probe for the health service; True when the backend serves."""
        try:
            self.backend.check()
        except BackendUnavailable as exc:
            self._backend_down(exc)
            return False
        self._backend_up()
        return True

    def _backend_up(self) -> None:
        if not self.backend_healthy:
            log.info("vault.backend.recovered", backend=self.backend.name)
        self.backend_healthy = True
        self._backend_ok_until = time.monotonic() + self._check_interval

    def _backend_down(self, exc: BackendUnavailable) -> None:
        if self.backend_healthy:
            log.warning("vault.backend.down", backend=self.backend.name, reason=exc.reason)
        self.backend_healthy = False
        self._backend_ok_until = 0.0
        self.cache.clear()

    def _unavailable(self, exc: BackendUnavailable) -> Unavailable:
        return Unavailable(
            exc.reason, f"{exc.message}; personal data cannot be processed now", domain=DOMAIN
        )

    def _keys(self, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except BackendUnavailable as exc:
            self._backend_down(exc)
            raise self._unavailable(exc) from exc

    # -- helpers ---------------------------------------------------------------------------------

    def _check_role(self, caller: Caller, action: Action, *roles: Role) -> None:
        if caller.role not in roles:
            self._audit_failure(caller, action, Outcome.DENIED, "ROLE_DENIED")
            raise PermissionDenied(
                "ROLE_DENIED", f"role {caller.role} may not call {action}", domain=DOMAIN
            )

    def _check_batch(self, name: str, size: int) -> None:
        if size == 0:
            raise invalid_fields([FieldViolation(name, "must contain at least one item")])
        if size > self.max_batch:
            raise invalid_fields(
                [FieldViolation(name, f"must contain at most {self.max_batch} items")]
            )

    def _audit_failure(
        self, caller: Caller, action: Action, outcome: Outcome, reason: str, **extra: object
    ) -> None:
        record = AuditRecord(
            caller=caller.name,
            caller_role=caller.role.value,
            action=action,
            outcome=outcome,
            reason=reason,
            **extra,  # type: ignore[arg-type]
        )
        self.audit.record(self.engine, record)

    def audited(self, caller: Caller, action: Action, fn: Callable[[], T], **extra: object) -> T:
        """Run ``fn``; on a client-visible failure append a DENIED/FAILED event, then re-raise."""
        try:
            return fn()
        except ServiceError as exc:
            if exc.reason != "ROLE_DENIED":
                outcome = Outcome.DENIED if exc.code.name == "PERMISSION_DENIED" else Outcome.FAILED
                self._audit_failure(caller, action, outcome, exc.reason, **extra)
            raise

    def _validate_tokens(self, values: Sequence[str], name: str = "tokens") -> None:
        self._check_batch(name, len(values))
        if are_tokens(values):  # one regex for the batch; item by item only to name bad ones
            return
        bad = [
            FieldViolation(f"{name}[{i}]", "is not a vault token")
            for i, t in enumerate(values)
            if not is_token(t)
        ]
        if bad:
            raise invalid_fields(bad)

    def _token_rows(self, wanted: Sequence[str]) -> dict[str, StoredToken]:
        """Token -> its row (:data:`StoredToken`) for every token of ``wanted``.

        NOT_FOUND naming the first unknown or erased token.
        """
        unique = list(dict.fromkeys(wanted))
        rows: dict[str, StoredToken] = {}
        with self.engine.connect() as conn:
            # The hot path of detokenization: a DB-API cursor and fetchall() skip SQLAlchemy's
            # statement compilation (hundreds of expanding parameters) and its per-row Row
            # objects; only placeholders are interpolated into the SQL. Rows stay the driver's
            # tuples (no object per row).
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                for start in range(0, len(unique), 500):
                    chunk = unique[start : start + 500]
                    sql = (
                        "SELECT token, subject_id, ciphertext, masked, erased_at FROM tokens "  # noqa: S608 - only placeholders are interpolated
                        f"WHERE token IN ({', '.join([mark] * len(chunk))})"
                    )
                    cursor.execute(sql, tuple(chunk))
                    fetched = cursor.fetchall()
                    rows.update(zip(map(_token_of, fetched), fetched, strict=True))
            finally:
                cursor.close()
        if len(rows) == len(unique) and not any(map(_erased_at_of, rows.values())):
            return rows
        for i, token in enumerate(wanted):
            found = rows.get(token)
            if found is None:
                raise NotFound(
                    "TOKEN_NOT_FOUND",
                    f"tokens[{i}] is not known to the vault",
                    domain=DOMAIN,
                    metadata={"index": str(i), "token": token},
                )
            if found[_ERASED] is not None:
                raise NotFound(
                    "TOKEN_ERASED",
                    f"tokens[{i}] was erased",
                    domain=DOMAIN,
                    metadata={"index": str(i), "token": token},
                )
        return rows

    def _data_keys(self, subject_ids: Sequence[str]) -> dict[str, AESGCM]:
        """Data keys of live subjects, as ciphers: cached, else unwrapped in one backend batch."""
        unique = list(dict.fromkeys(subject_ids))
        keys = self.cache.get_many(unique)
        if len(keys) == len(unique):
            return keys
        missing = [s for s in unique if s not in keys]
        if not missing:
            return keys
        wrapped: dict[str, str] = {}
        with self.engine.connect() as conn:
            for start in range(0, len(missing), 500):
                chunk = missing[start : start + 500]
                for row in conn.execute(
                    select(subject_keys.c.subject_id, subject_keys.c.wrapped_dek).where(
                        subject_keys.c.subject_id.in_(chunk)
                    )
                ):
                    if row.wrapped_dek is not None:
                        wrapped[row.subject_id] = row.wrapped_dek
        order = [s for s in missing if s in wrapped]
        try:
            plain = self._keys(lambda: self.backend.unwrap([wrapped[s] for s in order]))
        except UnwrapFailure as exc:
            subject = order[exc.index]
            log.error("vault.integrity.wrapped_key", subject_id=subject)
            raise DataLoss(
                "WRAPPED_KEY_INTEGRITY_FAILURE",
                "a stored data key failed its integrity check",
                metadata={"subject_id": subject},
            ) from exc
        for subject_id, key in zip(order, plain, strict=True):
            cipher = AESGCM(key)
            self.cache.put(subject_id, cipher)
            keys[subject_id] = cipher
        return keys

    # -- tokenize --------------------------------------------------------------------------------

    def tokenize(
        self, caller: Caller, items: Sequence[TokenizeInput], request_id: str = ""
    ) -> list[Tokenized]:
        """Store values (deduplicated through the blind index) and return their tokens."""
        self._check_role(caller, Action.TOKENIZE, Role.PLATFORM)
        self._check_batch("items", len(items))
        canon: list[str] = []
        violations: list[FieldViolation] = []
        for i, item in enumerate(items):
            if not is_subject_id(item.subject_id):
                violations.append(
                    FieldViolation(
                        f"items[{i}].subject_id", "must be 1-128 characters of A-Za-z0-9._:-"
                    )
                )
            try:
                canon.append(normalize(item.field_type, item.value))
            except ValueError_ as exc:
                violations.append(FieldViolation(f"items[{i}].value", exc.description))
                canon.append("")
        if violations:
            raise invalid_fields(violations)
        subjects = tuple(dict.fromkeys(i.subject_id for i in items))
        fields = tuple(dict.fromkeys(i.field_type.value for i in items))

        def run() -> list[Tokenized]:
            self.ensure_backend()
            messages = [
                crypto.blind_index_message(it.field_type, c, it.subject_id)
                for it, c in zip(items, canon, strict=True)
            ]
            bidx = self._keys(lambda: self.backend.blind_index(messages))
            for attempt in range(3):
                try:
                    return self._tokenize_once(caller, items, canon, bidx, request_id)
                except IntegrityError:
                    if attempt == 2:
                        raise
                    log.info("vault.tokenize.retry_conflict", attempt=attempt)
            raise AssertionError("unreachable")

        return self.audited(
            caller,
            Action.TOKENIZE,
            run,
            subject_ids=subjects,
            field_types=fields,
            request_id=request_id,
        )

    def _tokenize_once(
        self,
        caller: Caller,
        items: Sequence[TokenizeInput],
        canon: list[str],
        bidx: list[bytes],
        request_id: str,
    ) -> list[Tokenized]:
        pairs = list(
            dict.fromkeys((it.field_type.value, b) for it, b in zip(items, bidx, strict=True))
        )
        existing: dict[tuple[str, bytes], StoredToken] = {}
        subjects = list(dict.fromkeys(it.subject_id for it in items))
        with self.engine.connect() as conn:
            # The HMAC input includes the field type, so bidx alone selects the candidates;
            # the (field_type, bidx) pair is then matched exactly.
            wanted = set(pairs)
            mark = "?" if conn.dialect.paramstyle == "qmark" else "%s"
            unique_bidx = list(dict.fromkeys(b for _, b in pairs))
            for start in range(0, len(unique_bidx), 500):
                chunk = unique_bidx[start : start + 500]
                sql = (
                    "SELECT token, field_type, subject_id, bidx, masked FROM tokens "  # noqa: S608 - only placeholders are interpolated
                    f"WHERE bidx IN ({', '.join([mark] * len(chunk))})"
                )
                for row in conn.exec_driver_sql(sql, tuple(chunk)):
                    key = (row[1], bytes(row[3]))
                    if key in wanted:
                        existing[key] = (row[0], row[2], None, row[4], None)
            subject_rows = {
                row.subject_id: row
                for row in conn.execute(
                    select(subject_keys).where(subject_keys.c.subject_id.in_(subjects))
                )
            }
        for i, (item, b) in enumerate(zip(items, bidx, strict=True)):
            held = existing.get((item.field_type.value, b))
            if held is not None and held[_SUBJECT] != item.subject_id:
                raise FailedPrecondition(
                    "VALUE_HELD_BY_OTHER_SUBJECT",
                    f"items[{i}].value is already registered to another subject",
                    domain=DOMAIN,
                    metadata={"index": str(i), "token": held[_TOKEN]},
                    violations=[FieldViolation(f"items[{i}].value", "already registered")],
                )
        erased = [s for s, r in subject_rows.items() if r.erased_at is not None]
        if erased:
            raise FailedPrecondition(
                "SUBJECT_ERASED",
                "a subject in the request was erased",
                domain=DOMAIN,
                metadata={"subject_id": erased[0]},
            )
        need_new = [
            (i, it)
            for i, (it, b) in enumerate(zip(items, bidx, strict=True))
            if (it.field_type.value, b) not in existing
        ]
        new_subjects = [
            s for s in dict.fromkeys(it.subject_id for _, it in need_new) if s not in subject_rows
        ]
        old_subjects = [
            s for s in dict.fromkeys(it.subject_id for _, it in need_new) if s in subject_rows
        ]
        keys = self._data_keys(old_subjects) if old_subjects else {}
        fresh = {s: crypto.new_data_key() for s in new_subjects}
        wrapped = self._keys(lambda: self.backend.wrap(list(fresh.values()))) if fresh else []
        fresh_ciphers = {s: AESGCM(k) for s, k in fresh.items()}
        keys.update(fresh_ciphers)
        now = _now()
        results: list[Tokenized | None] = [None] * len(items)
        new_rows: dict[tuple[str, bytes], dict[str, object]] = {}
        for i, (item, b) in enumerate(zip(items, bidx, strict=True)):
            key = (item.field_type.value, b)
            old = existing.get(key)
            if old is not None:
                results[i] = Tokenized(old[_TOKEN], old[_MASKED] or "", False)
                continue
            if key in new_rows:
                results[i] = Tokenized(
                    str(new_rows[key]["token"]), str(new_rows[key]["masked"]), True
                )
                continue
            token = new_token(item.field_type)
            masked = mask(item.field_type, canon[i])
            new_rows[key] = {
                "token": token,
                "field_type": item.field_type.value,
                "subject_id": item.subject_id,
                "bidx": b,
                "ciphertext": crypto.encrypt_value(
                    keys[item.subject_id], item.field_type, token, item.subject_id, canon[i]
                ),
                "masked": masked,
                "created_at": now,
                "erased_at": None,
            }
            results[i] = Tokenized(token, masked, True)
        done = [r for r in results if r is not None]
        with self.audit.lock, self.engine.begin() as conn:
            if fresh:
                conn.execute(
                    insert(subject_keys),
                    [
                        {
                            "subject_id": s,
                            "wrapped_dek": w.ciphertext,
                            "kek_version": w.version,
                            "created_at": now,
                            "erased_at": None,
                        }
                        for s, w in zip(fresh, wrapped, strict=True)
                    ],
                )
            if new_rows:
                conn.execute(insert(tokens), list(new_rows.values()))
            self.audit.append(
                conn,
                AuditRecord(
                    caller=caller.name,
                    caller_role=caller.role.value,
                    action=Action.TOKENIZE,
                    outcome=Outcome.ALLOWED,
                    tokens=tuple(r.token for r in done),
                    subject_ids=tuple(subjects),
                    field_types=tuple(dict.fromkeys(i.field_type.value for i in items)),
                    request_id=request_id,
                ),
            )
        for s, cipher in fresh_ciphers.items():
            self.cache.put(s, cipher)
        return done

    # -- lookup ----------------------------------------------------------------------------------

    def lookup(
        self, caller: Caller, field_type: FieldType | None, values: Sequence[str]
    ) -> list[str | None]:
        """Existing tokens for identifier values (blind index; nothing is decrypted)."""
        self._check_role(caller, Action.LOOKUP, Role.PLATFORM)
        if field_type is None or field_type not in SEARCHABLE:
            raise invalid_fields(
                [FieldViolation("field_type", "must be FIELD_TYPE_ID_NUMBER or FIELD_TYPE_PHONE")]
            )
        self._check_batch("values", len(values))
        canon: list[str] = []
        violations = []
        for i, value in enumerate(values):
            try:
                canon.append(normalize(field_type, value))
            except ValueError_ as exc:
                violations.append(FieldViolation(f"values[{i}]", exc.description))
        if violations:
            raise invalid_fields(violations)

        def run() -> list[str | None]:
            self.ensure_backend()
            bidx = self._keys(
                lambda: self.backend.blind_index(
                    [crypto.blind_index_message(field_type, c, "") for c in canon]
                )
            )
            found: dict[bytes, str] = {}
            with self.audit.lock, self.engine.begin() as conn:
                unique = list(dict.fromkeys(bidx))
                for start in range(0, len(unique), 500):
                    for row in conn.execute(
                        select(tokens.c.token, tokens.c.bidx).where(
                            tokens.c.field_type == field_type.value,
                            tokens.c.bidx.in_(unique[start : start + 500]),
                            tokens.c.erased_at.is_(None),
                        )
                    ):
                        found[bytes(row.bidx)] = row.token
                result = [found.get(b) for b in bidx]
                self.audit.append(
                    conn,
                    AuditRecord(
                        caller=caller.name,
                        caller_role=caller.role.value,
                        action=Action.LOOKUP,
                        outcome=Outcome.ALLOWED,
                        tokens=tuple(t for t in result if t),
                        field_types=(field_type.value,),
                    ),
                )
            return result

        return self.audited(caller, Action.LOOKUP, run, field_types=(field_type.value,))

    # -- detokenize ------------------------------------------------------------------------------

    def detokenize(
        self,
        caller: Caller,
        wanted: Sequence[str],
        purpose: Purpose | None,
        reference: str = "",
        request_id: str = "",
    ) -> Detokenized:
        """Values behind tokens, as the policy allows for this caller and purpose.

        The policy is decided per item (through its field type); the ALLOWED event, carrying
        every requested token, is committed to the audit chain before any value is returned.
        """
        self._check_role(caller, Action.DETOKENIZE, Role.PLATFORM)
        violations = []
        if purpose is None:
            violations.append(FieldViolation("purpose", "must name a purpose"))
        if not is_reference(reference):
            violations.append(
                FieldViolation("reference", "must be up to 128 characters of A-Za-z0-9._:/#-")
            )
        if violations:
            raise invalid_fields(violations)
        assert purpose is not None
        self._validate_tokens(wanted)
        policy = self.policy.current()
        field_types = [PREFIX_TYPE[t[:3]] for t in wanted]
        decisions = {
            f: policy.decide(caller.name, caller.role.value, f, purpose)
            for f in dict.fromkeys(field_types)
        }
        extra: dict[str, object] = {
            "purpose": purpose.value,
            "tokens": tuple(wanted),
            "reference": reference,
            "request_id": request_id,
            "policy_version": policy.version,
            "field_types": tuple(f.value for f in decisions),
        }

        def run() -> Detokenized:
            denied = [f for f, a in decisions.items() if a is Access.DENY]
            if denied:
                raise PermissionDenied(
                    "POLICY_DENIED",
                    f"policy version {policy.version} does not allow {', '.join(denied)} "
                    f"for purpose {purpose.value}",
                    domain=DOMAIN,
                    metadata={"policy_version": str(policy.version), "field_type": denied[0]},
                )
            rows = self._token_rows(wanted)
            plain_types = {f for f, a in decisions.items() if a is Access.PLAIN}
            # Plain items are decrypted in one pass over parallel lists; masked items take the
            # stored masked form.
            if len(plain_types) == len(decisions):
                plain_at: Sequence[int] = range(len(wanted))
                plain_tokens, plain_types_of = wanted, field_types
            else:
                plain_at = [i for i, f in enumerate(field_types) if f in plain_types]
                plain_tokens = [wanted[i] for i in plain_at]
                plain_types_of = [field_types[i] for i in plain_at]
            plain = (
                self._decrypt(rows, wanted, plain_at, plain_tokens, plain_types_of)
                if plain_tokens
                else []
            )
            if len(plain) == len(wanted):
                values, masked = plain, [False] * len(wanted)
            else:
                decrypted = iter(plain)
                masked = [f not in plain_types for f in field_types]
                values = [
                    (rows[t][_MASKED] or "") if m else next(decrypted)
                    for t, m in zip(wanted, masked, strict=True)
                ]
            self.audit.record(
                self.engine,
                AuditRecord(
                    caller=caller.name,
                    caller_role=caller.role.value,
                    action=Action.DETOKENIZE,
                    outcome=Outcome.ALLOWED,
                    subject_ids=tuple(dict.fromkeys(map(_subject_of, rows.values()))),
                    **extra,  # type: ignore[arg-type]
                ),
            )
            return Detokenized(wanted, values, masked, field_types, policy.version)

        return self.audited(caller, Action.DETOKENIZE, run, **extra)

    def _decrypt(
        self,
        rows: dict[str, StoredToken],
        wanted: Sequence[str],
        plain_at: Sequence[int],
        plain_tokens: Sequence[str],
        field_types: Sequence[FieldType],
    ) -> list[str]:
        """The values of ``plain_tokens`` (item ``k`` is ``wanted[plain_at[k]]``)."""
        self.ensure_backend()
        picked = [rows[t] for t in plain_tokens]
        subjects = [r[_SUBJECT] for r in picked]
        ciphers = self._data_keys(subjects)
        aeads = list(map(ciphers.get, subjects))
        if None in aeads:  # a subject erased after its token rows were read
            i = plain_at[aeads.index(None)]
            raise NotFound(
                "TOKEN_ERASED",
                f"tokens[{i}] was erased",
                domain=DOMAIN,
                metadata={"index": str(i), "token": wanted[i]},
            )
        try:
            return crypto.decrypt_values(
                aeads,  # type: ignore[arg-type] # no None left
                field_types,
                plain_tokens,
                subjects,
                [r[_CIPHERTEXT] or b"" for r in picked],
            )
        except crypto.IntegrityFailureAt as exc:
            i = plain_at[exc.index]
            log.error("vault.integrity.ciphertext", token=wanted[i])
            raise DataLoss(
                "CIPHERTEXT_INTEGRITY_FAILURE",
                f"tokens[{i}]: stored ciphertext failed its integrity check",
                metadata={"index": str(i), "token": wanted[i]},
            ) from exc

    # -- mask ------------------------------------------------------------------------------------

    def mask(self, caller: Caller, wanted: Sequence[str]) -> list[tuple[str, str, FieldType]]:
        """Masked display forms (no key needed, so this works while the backend is down)."""
        self._check_role(caller, Action.MASK, Role.PLATFORM)
        self._validate_tokens(wanted)

        def run() -> list[tuple[str, str, FieldType]]:
            rows = self._token_rows(wanted)
            out = [(t, rows[t][_MASKED] or "", token_field_type(t)) for t in wanted]
            self.audit.record(
                self.engine,
                AuditRecord(
                    caller=caller.name,
                    caller_role=caller.role.value,
                    action=Action.MASK,
                    outcome=Outcome.ALLOWED,
                    tokens=tuple(wanted),
                ),
            )
            return out

        return self.audited(caller, Action.MASK, run, tokens=tuple(wanted))

    # -- erase -----------------------------------------------------------------------------------

    def erase(
        self, caller: Caller, subject_ids: Sequence[str], reference: str = "", request_id: str = ""
    ) -> tuple[int, int]:
        """Crypto-shred subjects: destroy their data keys, ciphertexts and blind indexes."""
        self._check_role(caller, Action.ERASE, Role.PLATFORM)
        self._check_batch("subject_ids", len(subject_ids))
        violations = [
            FieldViolation(f"subject_ids[{i}]", "must be 1-128 characters of A-Za-z0-9._:-")
            for i, s in enumerate(subject_ids)
            if not is_subject_id(s)
        ]
        if not is_reference(reference):
            violations.append(
                FieldViolation("reference", "must be up to 128 characters of A-Za-z0-9._:/#-")
            )
        if violations:
            raise invalid_fields(violations)
        unique = list(dict.fromkeys(subject_ids))

        def run() -> tuple[int, int]:
            now = _now()
            with self.audit.lock, self.engine.begin() as conn:
                erased_tokens = [
                    r.token
                    for r in conn.execute(
                        select(tokens.c.token).where(
                            tokens.c.subject_id.in_(unique), tokens.c.erased_at.is_(None)
                        )
                    )
                ]
                subjects = conn.execute(
                    update(subject_keys)
                    .where(
                        subject_keys.c.subject_id.in_(unique), subject_keys.c.erased_at.is_(None)
                    )
                    .values(wrapped_dek=None, kek_version=None, erased_at=now)
                ).rowcount
                conn.execute(
                    update(tokens)
                    .where(tokens.c.subject_id.in_(unique), tokens.c.erased_at.is_(None))
                    .values(ciphertext=None, bidx=None, masked=None, erased_at=now)
                )
                self.audit.append(
                    conn,
                    AuditRecord(
                        caller=caller.name,
                        caller_role=caller.role.value,
                        action=Action.ERASE,
                        outcome=Outcome.ALLOWED,
                        subject_ids=tuple(unique),
                        tokens=tuple(erased_tokens),
                        reference=reference,
                        request_id=request_id,
                    ),
                )
            self.cache.discard(unique)
            return subjects, len(erased_tokens)

        return self.audited(
            caller,
            Action.ERASE,
            run,
            subject_ids=tuple(unique),
            reference=reference,
            request_id=request_id,
        )

    # -- keys ------------------------------------------------------------------------------------

    def _outdated(self, current: int) -> int:
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(subject_keys)
                    .where(
                        subject_keys.c.wrapped_dek.is_not(None),
                        subject_keys.c.kek_version < current,
                    )
                ).scalar_one()
            )

    def rotate(self, caller: Caller, reference: str = "") -> tuple[int, int]:
        """New KEK version; returns (current version, data keys still on older versions)."""
        self._check_role(caller, Action.ROTATE_KEYS, Role.KEY_ADMIN)

        def run() -> tuple[int, int]:
            self.ensure_backend()
            status = self._keys(self.backend.rotate)
            outdated = self._outdated(status.current_version)
            self.audit.record(
                self.engine,
                AuditRecord(
                    caller=caller.name,
                    caller_role=caller.role.value,
                    action=Action.ROTATE_KEYS,
                    outcome=Outcome.ALLOWED,
                    reference=reference,
                    reason=f"KEK_VERSION_{status.current_version}",
                ),
            )
            log.info("vault.keys.rotated", version=status.current_version, outdated=outdated)
            return status.current_version, outdated

        return self.audited(caller, Action.ROTATE_KEYS, run, reference=reference)

    def rewrap(
        self, caller: Caller, limit: int = 0, retire_old_versions: bool = False
    ) -> RewrapResult:
        """Move wrapped data keys (and the audit signing key) to the current KEK version."""
        self._check_role(caller, Action.REWRAP, Role.KEY_ADMIN)
        if limit < 0:
            raise invalid_fields([FieldViolation("limit", "must not be negative")])

        def run() -> RewrapResult:
            self.ensure_backend()
            status = self._keys(self.backend.status)
            current = status.current_version
            done = 0
            while limit == 0 or done < limit:
                take = 250 if limit == 0 else min(250, limit - done)
                with self.engine.connect() as conn:
                    rows = conn.execute(
                        select(subject_keys.c.subject_id, subject_keys.c.wrapped_dek)
                        .where(
                            subject_keys.c.wrapped_dek.is_not(None),
                            subject_keys.c.kek_version < current,
                        )
                        .order_by(subject_keys.c.subject_id)
                        .limit(take)
                    ).all()
                if not rows:
                    break
                try:
                    fresh = self._keys(
                        lambda rows=rows: self.backend.rewrap(  # type: ignore[misc]
                            [r.wrapped_dek for r in rows]
                        )
                    )
                except UnwrapFailure as exc:
                    raise DataLoss(
                        "WRAPPED_KEY_INTEGRITY_FAILURE",
                        "a stored data key failed its integrity check",
                        metadata={"subject_id": rows[exc.index].subject_id},
                    ) from exc
                with self.engine.begin() as conn:
                    for row, new in zip(rows, fresh, strict=True):
                        conn.execute(
                            update(subject_keys)
                            .where(
                                subject_keys.c.subject_id == row.subject_id,
                                subject_keys.c.wrapped_dek == row.wrapped_dek,
                            )
                            .values(wrapped_dek=new.ciphertext, kek_version=new.version)
                        )
                done += len(rows)
            with self.engine.connect() as conn:
                material = conn.execute(
                    select(key_material).where(key_material.c.kek_version < current)
                ).all()
            if material:
                fresh_m = self._keys(lambda: self.backend.rewrap([m.wrapped for m in material]))
                with self.engine.begin() as conn:
                    for row, new in zip(material, fresh_m, strict=True):
                        conn.execute(
                            update(key_material)
                            .where(key_material.c.name == row.name)
                            .values(wrapped=new.ciphertext, kek_version=new.version)
                        )
            remaining = self._outdated(current)
            min_version = status.min_decryption_version
            if retire_old_versions and remaining == 0 and min_version < current:
                min_version = self._keys(
                    lambda: self.backend.retire(current)
                ).min_decryption_version
            self.audit.record(
                self.engine,
                AuditRecord(
                    caller=caller.name,
                    caller_role=caller.role.value,
                    action=Action.REWRAP,
                    outcome=Outcome.ALLOWED,
                    reason=f"KEK_VERSION_{current}",
                ),
            )
            log.info("vault.keys.rewrapped", count=done, remaining=remaining, version=current)
            return RewrapResult(done, remaining, current, min_version)

        return self.audited(caller, Action.REWRAP, run)
