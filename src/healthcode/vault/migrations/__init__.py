"""Alembic migrations of the vault database (run programmatically by :func:`healthcode.vault.db.migrate`)."""
