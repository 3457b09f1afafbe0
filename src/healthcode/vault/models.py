"""The vault's tables (SQLAlchemy Core; the schema is created by the Alembic migrations).

Nothing here holds plaintext personal data: values are AES-GCM ciphertext, blind indexes are HMACs,
data keys are wrapped, and only the masked display form (``139****1234``) is stored in clear.
Times are integer microseconds since the Unix epoch so that audit hashes are reproducible on every
database.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

_ID = BigInteger().with_variant(Integer(), "sqlite")

subject_keys = Table(
    "subject_keys",
    metadata,
    Column("subject_id", String(128), primary_key=True),
    Column("wrapped_dek", Text, nullable=True),
    Column("kek_version", Integer, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("erased_at", BigInteger, nullable=True),
    Index("ix_subject_keys_kek_version", "kek_version"),
)

tokens = Table(
    "tokens",
    metadata,
    Column("token", String(32), primary_key=True),
    Column("field_type", String(16), nullable=False),
    Column("subject_id", String(128), nullable=False),
    Column("bidx", LargeBinary(32), nullable=True),
    Column("ciphertext", LargeBinary, nullable=True),
    Column("masked", String(300), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("erased_at", BigInteger, nullable=True),
    UniqueConstraint("field_type", "bidx", name="uq_tokens_field_type_bidx"),
    Index("ix_tokens_subject_id", "subject_id"),
)

key_material = Table(
    "key_material",
    metadata,
    Column("name", String(64), primary_key=True),
    Column("wrapped", Text, nullable=False),
    Column("kek_version", Integer, nullable=False),
    Column("public_key", LargeBinary, nullable=True),
    Column("created_at", BigInteger, nullable=False),
)

credentials = Table(
    "credentials",
    metadata,
    Column("id", String(24), primary_key=True),
    Column("name", String(64), nullable=False),
    Column("role", String(32), nullable=False),
    Column("secret_hash", LargeBinary(32), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index("ix_credentials_name", "name"),
)

audit_events = Table(
    "audit_events",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),
    Column("event_id", String(36), nullable=False),
    Column("occurred_at", BigInteger, nullable=False),
    Column("caller", String(64), nullable=False),
    Column("caller_role", String(32), nullable=False),
    Column("action", String(32), nullable=False),
    Column("purpose", String(64), nullable=False),
    Column("outcome", String(16), nullable=False),
    Column("reason", String(64), nullable=False),
    Column("tokens", Text, nullable=False),
    Column("subject_ids", Text, nullable=False),
    Column("field_types", Text, nullable=False),
    Column("reference", String(128), nullable=False),
    Column("request_id", String(128), nullable=False),
    Column("policy_version", BigInteger, nullable=False),
    Column("prev_hash", LargeBinary(32), nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("key_id", String(16), nullable=False),
    Index("ix_audit_events_seq", "seq"),
    Index("ix_audit_events_caller", "caller"),
    Index("ix_audit_events_occurred_at", "occurred_at"),
)

#: The audit log's search index by token lives outside the migrated schema (ADR 0105): it is
#: derived data that the vault creates at start (:func:`healthcode.vault.db.ensure_audit_index`)
#: and rebuilds from ``audit_events`` whenever it is missing or of another format. On SQLite the
#: schema is a database file of its own, attached to every connection, so that indexing never
#: takes the vault database's write lock; on PostgreSQL it is a schema of the vault database.
AUDIT_INDEX_SCHEMA = "audit_index"
#: Bump when the index tables change shape: the vault then drops and rebuilds them.
AUDIT_INDEX_FORMAT = 1

index_metadata = MetaData(schema=AUDIT_INDEX_SCHEMA)

#: One row per (token, event). ``token_key`` is characters 4-11 of the token (40 of its random
#: bits; :func:`healthcode.vault.audit.token_key`), so a search confirms candidate events against
#: their own token list. ``bucket`` partitions the index by when an entry was written: new
#: entries always land in the newest bucket, so a write touches a bounded part of the B-tree
#: however long the log grows, and a search probes each bucket once.
audit_token_index = Table(
    "token_index",
    index_metadata,
    Column("bucket", Integer, primary_key=True, autoincrement=False),
    Column(
        "token_key",
        String(8).with_variant(String(8, collation="C"), "postgresql"),
        primary_key=True,
    ),
    Column("seq", BigInteger, primary_key=True, autoincrement=False),
    sqlite_with_rowid=False,
)

#: The single row (id 1) saying how far the index has read the log and which bucket it fills.
audit_index_state = Table(
    "state",
    index_metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("format", Integer, nullable=False),
    Column("indexed_seq", BigInteger, nullable=False),
    Column("bucket", Integer, nullable=False),
    Column("bucket_entries", BigInteger, nullable=False),
)

audit_head = Table(
    "audit_head",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("seq", BigInteger, nullable=False),
    Column("hash", LargeBinary(32), nullable=False),
)

audit_roots = Table(
    "audit_roots",
    metadata,
    Column("id", _ID, primary_key=True, autoincrement=True),
    Column("seq", BigInteger, nullable=False),
    Column("head_hash", LargeBinary(32), nullable=False),
    Column("signed_at", BigInteger, nullable=False),
    Column("key_id", String(16), nullable=False),
    Column("signature", LargeBinary(64), nullable=False),
    Column("statement", LargeBinary, nullable=False),
)
