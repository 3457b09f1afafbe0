"""The hash-chained, signed audit log (see docs/adr/0102-vault-audit-log.md).

Every event gets a chain position ``seq`` and

    hash_n = SHA-256("healthcode.vault.audit.v1" 0x00 || hash_{n-1} || canonical_content_n)
    signature_n = Ed25519(hash_n)

where the canonical content is sorted-key JSON of every field except the storage row id. Signed
roots (``seq``, ``head_hash``, time) are added periodically and on demand. The storage row id is
*not* hashed; it is the order in which rows are read, which is what makes reordering visible.

Verification classifies what it finds:

- MODIFIED: a row's content no longer matches its signed hash, or a row at a missing position was
  re-hashed without the signing key;
- DELETED: positions that a later event or a signed root proves existed are gone;
- INSERTED: a row the vault never signed, or a second copy of a genuine row;
- REORDERED: genuine rows whose positions do not increase in storage order;
- ROOT_INVALID: a signed root with a bad signature or a head hash the chain does not reproduce.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from enum import StrEnum
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    and_,
    insert,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from healthcode.vault.keys.base import KeyBackend
from healthcode.vault.models import (
    audit_events,
    audit_head,
    audit_index_state,
    audit_roots,
    audit_token_index,
    key_material,
)

GENESIS = b"\x00" * 32
_DOMAIN = b"healthcode.vault.audit.v1\x00"
ROOT_FORMAT = "healthcode.vault.audit.root.v1"
EXPORT_FORMAT = "healthcode.vault.audit.export.v1"
SIGNING_KEY_NAME = "audit-signing-ed25519"


class Action(StrEnum):
    """Audited operations."""

    TOKENIZE = "TOKENIZE"
    DETOKENIZE = "DETOKENIZE"
    LOOKUP = "LOOKUP"
    MASK = "MASK"
    ERASE = "ERASE"
    ROTATE_KEYS = "ROTATE_KEYS"
    REWRAP = "REWRAP"
    AUDIT_READ = "AUDIT_READ"


class Outcome(StrEnum):
    """How an audited call ended."""

    ALLOWED = "ALLOWED"
    DENIED = "DENIED"
    FAILED = "FAILED"


class FindingKind(StrEnum):
    """Verification finding kinds."""

    MODIFIED = "MODIFIED"
    DELETED = "DELETED"
    INSERTED = "INSERTED"
    REORDERED = "REORDERED"
    ROOT_INVALID = "ROOT_INVALID"


def now_us() -> int:
    """Microseconds since the epoch."""
    return time.time_ns() // 1000


@dataclass(frozen=True)
class AuditRecord:
    """What a call contributes to an event (never values)."""

    caller: str
    caller_role: str
    action: Action
    outcome: Outcome
    purpose: str = ""
    reason: str = ""
    tokens: tuple[str, ...] = ()
    subject_ids: tuple[str, ...] = ()
    field_types: tuple[str, ...] = ()
    reference: str = ""
    request_id: str = ""
    policy_version: int = 0


@dataclass(frozen=True)
class EventRow:
    """An event as stored (or exported)."""

    row_id: int
    seq: int
    event_id: str
    occurred_at: int
    caller: str
    caller_role: str
    action: str
    purpose: str
    outcome: str
    reason: str
    tokens: tuple[str, ...]
    subject_ids: tuple[str, ...]
    field_types: tuple[str, ...]
    reference: str
    request_id: str
    policy_version: int
    prev_hash: bytes
    hash: bytes
    signature: bytes
    key_id: str

    def canonical(self) -> bytes:
        """The hashed content."""
        return canonical_content(
            seq=self.seq,
            event_id=self.event_id,
            occurred_at=self.occurred_at,
            caller=self.caller,
            caller_role=self.caller_role,
            action=self.action,
            purpose=self.purpose,
            outcome=self.outcome,
            reason=self.reason,
            tokens=self.tokens,
            subject_ids=self.subject_ids,
            field_types=self.field_types,
            reference=self.reference,
            request_id=self.request_id,
            policy_version=self.policy_version,
        )


@dataclass(frozen=True)
class RootRow:
    """A signed root as stored."""

    seq: int
    head_hash: bytes
    signed_at: int
    key_id: str
    signature: bytes
    statement: bytes


@dataclass(frozen=True)
class Finding:
    """One verification problem."""

    kind: FindingKind
    seq: int
    last_seq: int
    row_id: int
    description: str


@dataclass
class VerifyReport:
    """The result of :func:`verify_chain`."""

    event_count: int
    root_count: int
    findings: list[Finding] = field(default_factory=list)
    latest_root: RootRow | None = None
    unrooted: int = 0

    @property
    def ok(self) -> bool:
        """True when nothing was found."""
        return not self.findings


def canonical_content(
    *,
    seq: int,
    event_id: str,
    occurred_at: int,
    caller: str,
    caller_role: str,
    action: str,
    purpose: str,
    outcome: str,
    reason: str,
    tokens: Sequence[Any],
    subject_ids: Sequence[Any],
    field_types: Sequence[Any],
    reference: str,
    request_id: str,
    policy_version: int,
    tokens_json: str | None = None,
) -> bytes:
    """Sorted-key compact JSON of an event's content.

    ``tokens_json`` is :func:`json_list` of ``tokens`` when the caller has it already (an
    append stores the same text): the longest part of an event is then encoded once.
    """
    doc = {
        "seq": seq,
        "event_id": event_id,
        "occurred_at": occurred_at,
        "caller": caller,
        "caller_role": caller_role,
        "action": action,
        "purpose": purpose,
        "outcome": outcome,
        "reason": reason,
        "subject_ids": list(subject_ids),
        "field_types": list(field_types),
        "reference": reference,
        "request_id": request_id,
        "policy_version": policy_version,
    }
    # "tokens" sorts after every other key, so the sorted-key JSON of the whole event is the
    # other fields' with the tokens member added at the end (pinned by a unit test).
    head = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    listed = json_list(tokens) if tokens_json is None else tokens_json
    return f'{head[:-1]},"tokens":{listed}}}'.encode()


def json_list(items: Sequence[Any]) -> str:
    """A list as canonical JSON (compact, sorted keys, ASCII): the stored form of list columns."""
    return json.dumps(list(items), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def token_key(token: str) -> str:
    """The audit search key of a token: its characters 4-11.

    Tokens are ``<type>_`` plus 26 random base32 characters, so these carry 40 random bits. The
    indexer computes the same key in SQL (``substr(token, 5, 8)``). Keys of different tokens can
    collide, so searches confirm each candidate event against its own token list
    (:func:`events_with_token`).
    """
    return token[4:12]


def events_with_token(token: str) -> ColumnElement[bool]:
    """A condition on ``audit_events`` selecting the events that list ``token``.

    The index narrows to candidate positions with one primary-key probe per bucket; the LIKE on
    the stored JSON token list (only evaluated for those candidates) removes key collisions.
    """
    newest = select(audit_index_state.c.bucket).where(audit_index_state.c.id == 1).scalar_subquery()
    buckets = select(literal(0).label("n")).cte("index_buckets", recursive=True)
    buckets = buckets.union_all(select(buckets.c.n + 1).where(buckets.c.n < newest))
    candidates = (
        select(audit_token_index.c.seq)
        .select_from(buckets)
        .join(audit_token_index, audit_token_index.c.bucket == buckets.c.n)
        .where(audit_token_index.c.token_key == token_key(token))
    )
    return and_(
        audit_events.c.seq.in_(candidates),
        audit_events.c.tokens.contains(json.dumps(token), autoescape=True),
    )


#: How an indexing step reads the events' token lists, per dialect (``audit_index`` is
#: ``AUDIT_INDEX_SCHEMA``): every string item's key, sorted so that the B-tree is written in
#: order. A token list that is not a JSON array of strings (only a tampered row has one) gives
#: its string items or nothing; on PostgreSQL unparsable JSON fails the statement and the range
#: is indexed by :func:`_index_one_by_one`.
_INDEX_EVENTS = {
    "sqlite": text(
        "INSERT OR IGNORE INTO audit_index.token_index (bucket, token_key, seq) "
        "SELECT :bucket, substr(t.value, 5, 8), e.seq "
        "FROM audit_events AS e, json_each(CASE WHEN json_valid(e.tokens) "
        "THEN e.tokens ELSE '[]' END) AS t "
        "WHERE e.seq > :low AND e.seq <= :high AND t.type = 'text' "
        "ORDER BY 2, 3"
    ),
    "postgresql": text(
        "INSERT INTO audit_index.token_index (bucket, token_key, seq) "
        "SELECT :bucket, substr(t.value #>> '{}', 5, 8), e.seq "
        "FROM audit_events AS e, jsonb_array_elements(e.tokens::jsonb) AS t "
        "WHERE e.seq > :low AND e.seq <= :high AND jsonb_typeof(t.value) = 'string' "
        "ORDER BY 2, 3 ON CONFLICT DO NOTHING"
    ),
}


def _index_one_by_one(conn: Connection, bucket: int, low: int, high: int) -> int:
    """The slow path of :meth:`AuditLog.index_tokens`: parse each event's token list here."""
    rows: set[tuple[int, str, int]] = set()
    for seq, tokens in conn.execute(
        select(audit_events.c.seq, audit_events.c.tokens).where(
            audit_events.c.seq > low, audit_events.c.seq <= high
        )
    ):
        try:
            items = json.loads(tokens)
        except ValueError:
            continue
        if isinstance(items, list):
            rows.update((bucket, token_key(t), int(seq)) for t in items if isinstance(t, str))
    if not rows:
        return 0
    on_conflict = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    result = conn.execute(
        on_conflict(audit_token_index).on_conflict_do_nothing(),
        [{"bucket": b, "token_key": k, "seq": q} for b, k, q in sorted(rows)],
    )
    return result.rowcount if result.rowcount >= 0 else len(rows)


#: Index entries per bucket (ADR 0105).
INDEX_BUCKET_ENTRIES = 1 << 18


def chain_hash(prev_hash: bytes, content: bytes) -> bytes:
    """The event hash."""
    return hashlib.sha256(_DOMAIN + prev_hash + content).digest()


def key_id_of(public: Ed25519PublicKey) -> str:
    """First 8 bytes of SHA-256 of the raw public key, hex."""
    return hashlib.sha256(public_raw(public)).hexdigest()[:16]


def public_raw(public: Ed25519PublicKey) -> bytes:
    """The raw 32-byte public key."""
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def root_statement(seq: int, head_hash: bytes, signed_at: int, key_id: str) -> bytes:
    """The canonical bytes a root signature covers."""
    doc = {
        "format": ROOT_FORMAT,
        "seq": seq,
        "head_hash": head_hash.hex(),
        "signed_at": signed_at,
        "key_id": key_id,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


class AuditSigner:
    """The Ed25519 audit signing key, held in memory; stored wrapped by the key backend."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id_of(self.public)

    def sign(self, data: bytes) -> bytes:
        """Sign bytes."""
        return self._private.sign(data)

    @classmethod
    def load_or_create(cls, engine: Engine, backend: KeyBackend) -> AuditSigner:
        """Unwrap the stored signing key, creating (and wrapping) it on first start."""
        with engine.connect() as conn:
            row = conn.execute(
                select(key_material).where(key_material.c.name == SIGNING_KEY_NAME)
            ).first()
        if row is not None:
            seed = backend.unwrap([row.wrapped])[0]
            return cls(Ed25519PrivateKey.from_private_bytes(seed))
        private = Ed25519PrivateKey.generate()
        from cryptography.hazmat.primitives.serialization import NoEncryption, PrivateFormat

        seed = private.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())
        wrapped = backend.wrap([seed])[0]
        with engine.begin() as conn:
            existing = conn.execute(
                select(key_material).where(key_material.c.name == SIGNING_KEY_NAME)
            ).first()
            if existing is not None:  # another replica won the race
                return cls(
                    Ed25519PrivateKey.from_private_bytes(backend.unwrap([existing.wrapped])[0])
                )
            conn.execute(
                insert(key_material).values(
                    name=SIGNING_KEY_NAME,
                    wrapped=wrapped.ciphertext,
                    kek_version=wrapped.version,
                    public_key=public_raw(private.public_key()),
                    created_at=now_us(),
                )
            )
        return cls(private)


def stored_public_keys(conn: Connection) -> dict[str, Ed25519PublicKey]:
    """Public keys recorded in the database (for online verification)."""
    out = {}
    for row in conn.execute(
        select(key_material.c.public_key).where(key_material.c.name == SIGNING_KEY_NAME)
    ):
        if row.public_key:
            public = Ed25519PublicKey.from_public_bytes(row.public_key)
            out[key_id_of(public)] = public
    return out


_HEAD_FOR_UPDATE = (
    select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1).with_for_update()
)
_INSERT_EVENT = insert(audit_events)
_UPDATE_HEAD = update(audit_head).where(audit_head.c.id == 1)


@dataclass
class _Pending:
    """An event waiting for the group commit."""

    record: AuditRecord
    seq: int = 0
    done: bool = False
    error: BaseException | None = None


class AuditLog:
    """Appends events and signs roots; serialises appends in-process and with a row lock."""

    def __init__(self, signer: AuditSigner) -> None:
        self.signer = signer
        self.lock = threading.RLock()
        self._queue: list[_Pending] = []
        self._queue_lock = threading.Lock()
        self._index_lock = threading.Lock()
        #: Entries per index bucket: bounds the part of the index B-tree a write touches.
        self.bucket_entries = INDEX_BUCKET_ENTRIES

    def append(self, conn: Connection, record: AuditRecord) -> int:
        """Append one event inside the caller's transaction; returns its seq.

        Callers hold :attr:`lock` for the whole transaction (SQLite has one writer anyway;
        PostgreSQL also takes ``FOR UPDATE`` on the head row, which orders replicas).
        """
        head = conn.execute(_HEAD_FOR_UPDATE).one()
        seq = int(head.seq) + 1
        event_id = str(uuid.uuid4())
        occurred = now_us()
        tokens = tuple(dict.fromkeys(record.tokens))
        tokens_json = json_list(tokens)
        content = canonical_content(
            seq=seq,
            event_id=event_id,
            occurred_at=occurred,
            caller=record.caller,
            caller_role=record.caller_role,
            action=record.action.value,
            purpose=record.purpose,
            outcome=record.outcome.value,
            reason=record.reason,
            tokens=tokens,
            subject_ids=record.subject_ids,
            field_types=record.field_types,
            reference=record.reference,
            request_id=record.request_id,
            policy_version=record.policy_version,
            tokens_json=tokens_json,
        )
        digest = chain_hash(head.hash, content)
        # Prebuilt statements with parameter dicts: SQLAlchemy reuses the compiled SQL instead of
        # coercing every value of a fresh ``.values(...)`` construct on each append.
        conn.execute(
            _INSERT_EVENT,
            {
                "seq": seq,
                "event_id": event_id,
                "occurred_at": occurred,
                "caller": record.caller,
                "caller_role": record.caller_role,
                "action": record.action.value,
                "purpose": record.purpose,
                "outcome": record.outcome.value,
                "reason": record.reason,
                "tokens": tokens_json,
                "subject_ids": json.dumps(list(record.subject_ids)),
                "field_types": json.dumps(list(record.field_types)),
                "reference": record.reference,
                "request_id": record.request_id,
                "policy_version": record.policy_version,
                "prev_hash": head.hash,
                "hash": digest,
                "signature": self.signer.sign(digest),
                "key_id": self.signer.key_id,
            },
        )
        conn.execute(_UPDATE_HEAD, {"seq": seq, "hash": digest})
        return seq

    def index_tokens(self, engine: Engine, max_events: int = 500) -> int:
        """Index the tokens of up to ``max_events`` appended events; returns events indexed.

        Indexing is deferred out of the request path and off the chain lock (ADR 0105): it only
        reads committed events, and on SQLite it writes a database file of its own, so appends
        and tokenization go on meanwhile. The whole step is one ``INSERT ... SELECT`` over the
        events' JSON token lists, run inside the database (no Python per token, and no GIL on
        SQLite). The audit service indexes before it searches; a background task keeps up.
        """
        with self._index_lock:
            if not self._index_behind(engine):  # the usual idle tick: no write transaction
                return 0
            return self._index_step(engine, max_events)

    @staticmethod
    def _index_behind(engine: Engine) -> bool:
        with engine.connect() as conn:
            indexed = conn.execute(
                select(audit_index_state.c.indexed_seq).where(audit_index_state.c.id == 1)
            ).scalar_one()
            head = conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar_one()
        return int(head) > int(indexed)

    def _index_step(self, engine: Engine, max_events: int) -> int:
        with engine.begin() as conn:
            # Writing the state row first takes the index's write lock (SQLite) or row lock
            # (PostgreSQL), so concurrent indexers of several processes take turns.
            conn.execute(
                update(audit_index_state)
                .where(audit_index_state.c.id == 1)
                .values(indexed_seq=audit_index_state.c.indexed_seq)
            )
            state = conn.execute(
                select(
                    audit_index_state.c.indexed_seq,
                    audit_index_state.c.bucket,
                    audit_index_state.c.bucket_entries,
                ).where(audit_index_state.c.id == 1)
            ).one()
            head = conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar_one()
            low = int(state.indexed_seq)
            high = min(int(head), low + max_events)
            if high <= low:
                return 0
            params = {"bucket": int(state.bucket), "low": low, "high": high}
            try:
                with conn.begin_nested():
                    added = conn.execute(_INDEX_EVENTS[conn.dialect.name], params).rowcount
            except DBAPIError:
                # A token list the database cannot read as JSON (only a tampered row has
                # one): index this range event by event, skipping what does not parse.
                added = _index_one_by_one(conn, **params)
            bucket, entries = int(state.bucket), int(state.bucket_entries) + max(added, 0)
            if entries >= self.bucket_entries:
                bucket, entries = bucket + 1, 0
            conn.execute(
                update(audit_index_state)
                .where(audit_index_state.c.id == 1)
                .values(indexed_seq=high, bucket=bucket, bucket_entries=entries)
            )
            return high - low

    def record(self, engine: Engine, record: AuditRecord) -> int:
        """Append one event durably before returning its seq (group commit).

        Concurrent callers queue their events; whichever thread takes the chain lock first
        writes every queued event in one transaction, so N simultaneous calls cost one commit.
        Each caller returns only after its own event is committed, and sees the error if the
        shared transaction failed (then nothing of that group was written).
        """
        slot = _Pending(record)
        with self._queue_lock:
            self._queue.append(slot)
        with self.lock:
            if not slot.done:
                with self._queue_lock:
                    group, self._queue = self._queue, []
                try:
                    with engine.begin() as conn:
                        for pending in group:
                            pending.seq = self.append(conn, pending.record)
                except BaseException as exc:
                    for pending in group:
                        pending.error = exc
                    raise
                finally:
                    for pending in group:
                        pending.done = True
        if slot.error is not None:
            raise slot.error
        return slot.seq

    def sign_root(self, engine: Engine, *, force: bool = False) -> RootRow | None:
        """Sign the current head unless the newest root already covers it."""
        with self.lock, engine.begin() as conn:
            head = conn.execute(
                select(audit_head.c.seq, audit_head.c.hash)
                .where(audit_head.c.id == 1)
                .with_for_update()
            ).one()
            last = conn.execute(
                select(audit_roots.c.seq).order_by(audit_roots.c.id.desc()).limit(1)
            ).first()
            if not force and (head.seq == 0 or (last is not None and last.seq >= head.seq)):
                return None
            signed_at = now_us()
            statement = root_statement(int(head.seq), head.hash, signed_at, self.signer.key_id)
            root = RootRow(
                int(head.seq),
                head.hash,
                signed_at,
                self.signer.key_id,
                self.signer.sign(statement),
                statement,
            )
            conn.execute(
                insert(audit_roots).values(
                    seq=root.seq,
                    head_hash=root.head_hash,
                    signed_at=root.signed_at,
                    key_id=root.key_id,
                    signature=root.signature,
                    statement=root.statement,
                )
            )
            return root


def _stored_list(raw: Any) -> tuple[Any, ...]:
    """A stored JSON list column as a tuple; a value that is not one (a tampered row) is kept
    as read, as the only item, so verification reports the row instead of failing on it."""
    try:
        items = json.loads(raw)
    except (TypeError, ValueError):
        return (raw,)
    return tuple(items) if isinstance(items, list) else (items,)


def _event_from_row(row: Any) -> EventRow:
    return EventRow(
        row_id=int(row.id),
        seq=int(row.seq),
        event_id=row.event_id,
        occurred_at=int(row.occurred_at),
        caller=row.caller,
        caller_role=row.caller_role,
        action=row.action,
        purpose=row.purpose,
        outcome=row.outcome,
        reason=row.reason,
        tokens=_stored_list(row.tokens),
        subject_ids=_stored_list(row.subject_ids),
        field_types=_stored_list(row.field_types),
        reference=row.reference,
        request_id=row.request_id,
        policy_version=int(row.policy_version),
        prev_hash=bytes(row.prev_hash),
        hash=bytes(row.hash),
        signature=bytes(row.signature),
        key_id=row.key_id,
    )


def read_events(conn: Connection, start_seq: int = 0, batch: int = 5000) -> Iterator[EventRow]:
    """Every event row in storage order (row id), streamed in batches."""
    last_id = -1
    while True:
        rows = conn.execute(
            select(audit_events)
            .where(audit_events.c.id > last_id, audit_events.c.seq >= start_seq)
            .order_by(audit_events.c.id)
            .limit(batch)
        ).all()
        if not rows:
            return
        for row in rows:
            yield _event_from_row(row)
        last_id = int(rows[-1].id)


def read_roots(conn: Connection) -> list[RootRow]:
    """Every signed root in storage order."""
    return [
        RootRow(
            int(r.seq),
            bytes(r.head_hash),
            int(r.signed_at),
            r.key_id,
            bytes(r.signature),
            bytes(r.statement),
        )
        for r in conn.execute(select(audit_roots).order_by(audit_roots.c.id))
    ]


def _verify_sig(keys: dict[str, Ed25519PublicKey], key_id: str, sig: bytes, data: bytes) -> bool:
    key = keys.get(key_id)
    if key is None:
        return False
    try:
        key.verify(sig, data)
    except InvalidSignature:
        return False
    return True


def _ranges(numbers: Iterable[int]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for n in sorted(numbers):
        if out and out[-1][1] == n - 1:
            out[-1] = (out[-1][0], n)
        else:
            out.append((n, n))
    return out


def _lis_members(values: list[int]) -> set[int]:
    """Indexes of one longest strictly increasing subsequence (patience sorting)."""
    import bisect

    tails: list[int] = []
    tails_idx: list[int] = []
    parent = [-1] * len(values)
    for i, v in enumerate(values):
        pos = bisect.bisect_left(tails, v)
        if pos == len(tails):
            tails.append(v)
            tails_idx.append(i)
        else:
            tails[pos] = v
            tails_idx[pos] = i
        parent[i] = tails_idx[pos - 1] if pos > 0 else -1
    members: set[int] = set()
    i = tails_idx[-1] if tails_idx else -1
    while i >= 0:
        members.add(i)
        i = parent[i]
    return members


def verify_chain(  # noqa: PLR0915 - one pass per finding kind, kept together
    events: Iterable[EventRow],
    roots: Sequence[RootRow],
    keys: dict[str, Ed25519PublicKey],
    claimed_head: int = 0,
) -> VerifyReport:
    """Check every event and root; see the module docstring for the classification.

    ``claimed_head`` is the head position the database records (unauthenticated, but it makes a
    truncated tail visible even after the last signed root).
    """
    rows = list(events)
    report = VerifyReport(event_count=len(rows), root_count=len(roots))
    findings: list[Finding] = []
    genuine: list[tuple[EventRow, int]] = []  # (row, authentic seq)
    forged: list[EventRow] = []
    for row in rows:
        sig_ok = _verify_sig(keys, row.key_id, row.signature, row.hash)
        if not sig_ok:
            forged.append(row)
            continue
        if chain_hash(row.prev_hash, row.canonical()) == row.hash:
            genuine.append((row, row.seq))
            continue
        # The signed hash is genuine but the content is not: was only the position changed?
        moved = next(
            (
                s
                for s in range(max(1, row.seq - 8), row.seq + 9)
                if s != row.seq
                and chain_hash(row.prev_hash, EventRow(**{**asdict(row), "seq": s}).canonical())
                == row.hash
            ),
            None,
        )
        if moved is not None:
            genuine.append((row, moved))
            findings.append(
                Finding(
                    FindingKind.REORDERED,
                    moved,
                    moved,
                    row.row_id,
                    f"event {moved} was renumbered to position {row.seq} (row {row.row_id})",
                )
            )
        else:
            findings.append(
                Finding(
                    FindingKind.MODIFIED,
                    row.seq,
                    row.seq,
                    row.row_id,
                    f"event {row.seq} (row {row.row_id}) was modified after it was signed",
                )
            )
            genuine.append((row, row.seq))
    # Duplicated genuine rows are insertions of copies.
    seen: dict[int, EventRow] = {}
    unique: list[tuple[EventRow, int]] = []
    for row, seq in genuine:
        if seq in seen and seen[seq].hash == row.hash:
            findings.append(
                Finding(
                    FindingKind.INSERTED,
                    seq,
                    seq,
                    row.row_id,
                    f"row {row.row_id} is an inserted copy of event {seq}",
                )
            )
            continue
        seen.setdefault(seq, row)
        unique.append((row, seq))
    # Storage order must follow chain order.
    seqs = [seq for _, seq in unique]
    keep = _lis_members(seqs)
    for i, (row, seq) in enumerate(unique):
        if i not in keep:
            findings.append(
                Finding(
                    FindingKind.REORDERED,
                    seq,
                    seq,
                    row.row_id,
                    f"event {seq} (row {row.row_id}) is stored out of chain order",
                )
            )
    # Links between consecutive genuine events.
    by_seq = {seq: row for row, seq in unique}
    for seq, row in sorted(by_seq.items()):
        prev = by_seq.get(seq - 1)
        if (
            prev is not None
            and row.prev_hash != prev.hash
            and chain_hash(row.prev_hash, row.canonical()) == row.hash
        ):
            findings.append(
                Finding(
                    FindingKind.MODIFIED,
                    seq,
                    seq,
                    row.row_id,
                    f"event {seq} does not link to event {seq - 1}",
                )
            )
    # Missing positions, up to the highest position proven by an event or a signed root.
    valid_roots = []
    for root in roots:
        ok = _verify_sig(keys, root.key_id, root.signature, root.statement) and (
            root.statement == root_statement(root.seq, root.head_hash, root.signed_at, root.key_id)
        )
        if not ok:
            findings.append(
                Finding(
                    FindingKind.ROOT_INVALID,
                    root.seq,
                    root.seq,
                    0,
                    f"signed root at event {root.seq} has an invalid signature",
                )
            )
            continue
        valid_roots.append(root)
    top = max([0, claimed_head, *by_seq, *(r.seq for r in valid_roots)])
    missing = set(range(1, top + 1)) - set(by_seq)
    for row in forged:
        if row.seq in missing:
            missing.discard(row.seq)
            findings.append(
                Finding(
                    FindingKind.MODIFIED,
                    row.seq,
                    row.seq,
                    row.row_id,
                    f"event {row.seq} (row {row.row_id}) was replaced: its hash was recomputed "
                    "without the signing key",
                )
            )
        else:
            findings.append(
                Finding(
                    FindingKind.INSERTED,
                    row.seq,
                    row.seq,
                    row.row_id,
                    f"row {row.row_id} claims position {row.seq} but was never signed by the vault",
                )
            )
    for first, last in _ranges(missing):
        what = f"event {first}" if first == last else f"events {first}-{last}"
        findings.append(Finding(FindingKind.DELETED, first, last, 0, f"{what} deleted"))
    for root in valid_roots:
        event = by_seq.get(root.seq)
        if event is not None and event.hash != root.head_hash:
            findings.append(
                Finding(
                    FindingKind.ROOT_INVALID,
                    root.seq,
                    root.seq,
                    event.row_id,
                    f"signed root at event {root.seq} does not match the stored chain",
                )
            )
    report.findings = sorted(findings, key=lambda f: (f.seq, f.kind.value, f.row_id))
    report.latest_root = max(valid_roots, key=lambda r: r.seq, default=None)
    covered = report.latest_root.seq if report.latest_root else 0
    report.unrooted = sum(1 for s in by_seq if s > covered)
    return report


def verify_database(
    engine: Engine, keys: dict[str, Ed25519PublicKey] | None = None
) -> VerifyReport:
    """Verify the log in a database (with the stored public key unless ``keys`` is given)."""
    with engine.connect() as conn:
        trusted = keys if keys is not None else stored_public_keys(conn)
        head = conn.execute(select(audit_head.c.seq).where(audit_head.c.id == 1)).scalar()
        return verify_chain(read_events(conn), read_roots(conn), trusted, int(head or 0))


# -- export for offline auditors ----------------------------------------------------------------


def export_lines(engine: Engine, start_seq: int = 0) -> Iterator[str]:
    """JSON Lines: a header with the public key(s), every event, every root."""
    with engine.connect() as conn:
        keys = stored_public_keys(conn)
        yield json.dumps(
            {
                "type": "header",
                "format": EXPORT_FORMAT,
                "public_keys": {
                    k: base64.b64encode(public_raw(v)).decode() for k, v in keys.items()
                },
            },
            sort_keys=True,
        )
        for event in read_events(conn, start_seq):
            doc: dict[str, Any] = {"type": "event", **asdict(event)}
            for name in ("prev_hash", "hash", "signature"):
                doc[name] = doc[name].hex()
            yield json.dumps(doc, sort_keys=True, ensure_ascii=True)
        for root in read_roots(conn):
            rdoc: dict[str, Any] = {"type": "root", **asdict(root)}
            rdoc["head_hash"] = root.head_hash.hex()
            rdoc["signature"] = root.signature.hex()
            rdoc["statement"] = root.statement.decode()
            yield json.dumps(rdoc, sort_keys=True)


def parse_export(lines: Iterable[str]) -> tuple[list[EventRow], list[RootRow]]:
    """Read an export back (the embedded public keys are ignored: auditors bring their own)."""
    events: list[EventRow] = []
    roots: list[RootRow] = []
    for line in lines:
        if not line.strip():
            continue
        doc = json.loads(line)
        kind = doc.pop("type")
        if kind == "event":
            for name in ("prev_hash", "hash", "signature"):
                doc[name] = bytes.fromhex(doc[name])
            for name in ("tokens", "subject_ids", "field_types"):
                doc[name] = tuple(doc[name])
            events.append(EventRow(**doc))
        elif kind == "root":
            roots.append(
                RootRow(
                    seq=doc["seq"],
                    head_hash=bytes.fromhex(doc["head_hash"]),
                    signed_at=doc["signed_at"],
                    key_id=doc["key_id"],
                    signature=bytes.fromhex(doc["signature"]),
                    statement=doc["statement"].encode(),
                )
            )
    return events, roots


def load_public_key(text: str) -> Ed25519PublicKey:
    """A public key from PEM or base64 of the raw 32 bytes."""
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    text = text.strip()
    if text.startswith("-----BEGIN"):
        key = load_pem_public_key(text.encode())
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError("not an Ed25519 public key")
        return key
    return Ed25519PublicKey.from_public_bytes(base64.b64decode(text))
