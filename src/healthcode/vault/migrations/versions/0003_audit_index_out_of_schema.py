"""Move the audit token index out of the migrated schema (see ADR 0105).

The index is derived data; the vault now keeps it in the ``audit_index`` schema (an attached
database file on SQLite), creates it at start and rebuilds it from ``audit_events``. This drops
the old in-schema tables; nothing is lost, the new index is filled from the log.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_table("audit_token_index")
    op.drop_table("audit_index_state")


def downgrade() -> None:
    op.create_table(
        "audit_index_state",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("indexed_seq", sa.BigInteger, nullable=False),
    )
    state = sa.table(
        "audit_index_state", sa.column("id", sa.Integer), sa.column("indexed_seq", sa.BigInteger)
    )
    op.bulk_insert(state, [{"id": 1, "indexed_seq": 0}])
    op.create_table(
        "audit_token_index",
        sa.Column("token_key", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sqlite_with_rowid=False,
    )
