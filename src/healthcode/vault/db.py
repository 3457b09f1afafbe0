"""Engine creation and programmatic Alembic migrations (run at every start; idempotent)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event, insert, select, text
from sqlalchemy.engine import make_url

from healthcode.vault.models import (
    AUDIT_INDEX_FORMAT,
    AUDIT_INDEX_SCHEMA,
    audit_index_state,
    index_metadata,
)

MIGRATIONS = Path(__file__).with_name("migrations")


def audit_index_file(database: str) -> str:
    """The SQLite file of the audit token index beside the vault database ``database``."""
    if not database or database == ":memory:":
        return ":memory:"
    return str(Path(database).with_suffix(".audit-index.sqlite3"))


def _sqlite_setup(index_file: str) -> Any:
    def setup(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        # The audit token index is a file of its own (ADR 0105): writing it takes that file's
        # lock, never the vault database's, so indexing runs beside appends and tokenization.
        cursor.execute(f"ATTACH DATABASE ? AS {AUDIT_INDEX_SCHEMA}", (index_file,))
        cursor.execute(f"PRAGMA {AUDIT_INDEX_SCHEMA}.journal_mode=WAL")
        cursor.execute(f"PRAGMA {AUDIT_INDEX_SCHEMA}.synchronous=NORMAL")
        cursor.close()

    return setup


def create_vault_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL, a busy timeout, its parent directory and the
    audit index file attached."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        engine = create_engine(url, connect_args={"check_same_thread": False}, pool_size=8)
        event.listen(engine, "connect", _sqlite_setup(audit_index_file(parsed.database or "")))
        return engine
    return create_engine(url, pool_size=8, max_overflow=8, pool_pre_ping=True)


def migrate(engine: Engine) -> None:
    """Upgrade the schema to the newest revision, then make sure the audit index exists."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")
    ensure_audit_index(engine)


def ensure_audit_index(engine: Engine) -> None:
    """Create the audit token index if it is missing; drop and recreate it if its format is old.

    The index is derived from ``audit_events``; a new or reset index starts at position 0 and
    the indexer fills it from the log.
    """
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {AUDIT_INDEX_SCHEMA}"))
        index_metadata.create_all(conn, checkfirst=True)
        found = conn.execute(
            select(audit_index_state.c.format).where(audit_index_state.c.id == 1)
        ).scalar_one_or_none()
        if found == AUDIT_INDEX_FORMAT:
            return
        if found is not None:
            index_metadata.drop_all(conn)
            index_metadata.create_all(conn)
        conn.execute(
            insert(audit_index_state).values(
                id=1, format=AUDIT_INDEX_FORMAT, indexed_seq=0, bucket=0, bucket_entries=0
            )
        )
