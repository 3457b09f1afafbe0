"""Initial vault schema: subject keys, tokens, key material, credentials, audit log.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "subject_keys",
        sa.Column("subject_id", sa.String(128), primary_key=True),
        sa.Column("wrapped_dek", sa.Text, nullable=True),
        sa.Column("kek_version", sa.Integer, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("erased_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_subject_keys_kek_version", "subject_keys", ["kek_version"])
    op.create_table(
        "tokens",
        sa.Column("token", sa.String(32), primary_key=True),
        sa.Column("field_type", sa.String(16), nullable=False),
        sa.Column("subject_id", sa.String(128), nullable=False),
        sa.Column("bidx", sa.LargeBinary(32), nullable=True),
        sa.Column("ciphertext", sa.LargeBinary, nullable=True),
        sa.Column("masked", sa.String(300), nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("erased_at", sa.BigInteger, nullable=True),
        sa.UniqueConstraint("field_type", "bidx", name="uq_tokens_field_type_bidx"),
    )
    op.create_index("ix_tokens_subject_id", "tokens", ["subject_id"])
    op.create_table(
        "key_material",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("wrapped", sa.Text, nullable=False),
        sa.Column("kek_version", sa.Integer, nullable=False),
        sa.Column("public_key", sa.LargeBinary, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "credentials",
        sa.Column("id", sa.String(24), primary_key=True),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("role", sa.String(32), nullable=False),
        sa.Column("secret_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("revoked_at", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_credentials_name", "credentials", ["name"])
    op.create_table(
        "audit_events",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("event_id", sa.String(36), nullable=False),
        sa.Column("occurred_at", sa.BigInteger, nullable=False),
        sa.Column("caller", sa.String(64), nullable=False),
        sa.Column("caller_role", sa.String(32), nullable=False),
        sa.Column("action", sa.String(32), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("reason", sa.String(64), nullable=False),
        sa.Column("tokens", sa.Text, nullable=False),
        sa.Column("subject_ids", sa.Text, nullable=False),
        sa.Column("field_types", sa.Text, nullable=False),
        sa.Column("reference", sa.String(128), nullable=False),
        sa.Column("request_id", sa.String(128), nullable=False),
        sa.Column("policy_version", sa.BigInteger, nullable=False),
        sa.Column("prev_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
    )
    op.create_index("ix_audit_events_seq", "audit_events", ["seq"])
    op.create_index("ix_audit_events_caller", "audit_events", ["caller"])
    op.create_index("ix_audit_events_occurred_at", "audit_events", ["occurred_at"])
    op.create_table(
        "audit_event_tokens",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("token", sa.String(32), primary_key=True),
    )
    op.create_index("ix_audit_event_tokens_token", "audit_event_tokens", ["token"])
    op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
    )
    op.create_table(
        "audit_index_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("indexed_seq", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "audit_roots",
        sa.Column("id", _ID, primary_key=True, autoincrement=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("head_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("signed_at", sa.BigInteger, nullable=False),
        sa.Column("key_id", sa.String(16), nullable=False),
        sa.Column("signature", sa.LargeBinary(64), nullable=False),
        sa.Column("statement", sa.LargeBinary, nullable=False),
    )
    head = sa.table(
        "audit_head",
        sa.column("id", sa.Integer),
        sa.column("seq", sa.BigInteger),
        sa.column("hash", sa.LargeBinary),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": b"\x00" * 32}])
    state = sa.table(
        "audit_index_state", sa.column("id", sa.Integer), sa.column("indexed_seq", sa.BigInteger)
    )
    op.bulk_insert(state, [{"id": 1, "indexed_seq": 0}])


def downgrade() -> None:
    for table in (
        "audit_roots",
        "audit_index_state",
        "audit_head",
        "audit_event_tokens",
        "audit_events",
        "credentials",
        "key_material",
        "tokens",
        "subject_keys",
    ):
        op.drop_table(table)
