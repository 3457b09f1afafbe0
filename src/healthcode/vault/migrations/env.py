"""Alembic environment: always runs on the connection handed over by ``migrate``."""

from __future__ import annotations

from alembic import context

from healthcode.vault.models import metadata

connection = context.config.attributes["connection"]
context.configure(
    connection=connection,
    target_metadata=metadata,
    render_as_batch=connection.dialect.name == "sqlite",
    version_table="vault_alembic_version",
)
with context.begin_transaction():
    context.run_migrations()
