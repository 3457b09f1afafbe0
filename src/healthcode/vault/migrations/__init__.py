"""Alembic migrations of the vault database, run at start by :func:`healthcode.vault.db.migrate`."""
