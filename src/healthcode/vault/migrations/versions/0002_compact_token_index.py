"""Compact audit token index: 64-bit token keys in one clustered B-tree (see ADR 0104).

Replaces ``audit_event_tokens`` (token string, seq; a row-id table plus two indexes, i.e. three
B-tree inserts per token, one of them at a random position of a string index) with
``audit_token_index`` (token key, seq) as the primary key of a WITHOUT ROWID table: one insert of
two integers per token. The index is derived data: it is rebuilt from the events by resetting the
indexing watermark.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_audit_event_tokens_token", "audit_event_tokens")
    op.drop_table("audit_event_tokens")
    op.create_table(
        "audit_token_index",
        sa.Column("token_key", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sqlite_with_rowid=False,
    )
    op.execute("UPDATE audit_index_state SET indexed_seq = 0 WHERE id = 1")


def downgrade() -> None:
    op.drop_table("audit_token_index")
    op.create_table(
        "audit_event_tokens",
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("token", sa.String(32), primary_key=True),
    )
    op.create_index("ix_audit_event_tokens_token", "audit_event_tokens", ["token"])
    op.execute("UPDATE audit_index_state SET indexed_seq = 0 WHERE id = 1")
