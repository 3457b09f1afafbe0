"""Alembic migrations produce exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

import healthcode.server.db.all_models  # noqa: F401 - registers every table
from healthcode.server.db.base import Base
from healthcode.server.db.engine import create_db_engine
from healthcode.server.db.migrate import upgrade


def test_upgrade_matches_models_and_is_repeatable(database_url: str) -> None:
    upgrade(database_url)
    upgrade(database_url)  # a second run is a no-op
    engine = create_db_engine(database_url, pool_size=1)
    try:
        with engine.connect() as conn:
            diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
            tables = set(inspect(conn).get_table_names())
    finally:
        engine.dispose()
    assert diff == []
    assert set(Base.metadata.tables) <= tables
    # The indexes behind "checkpoint + time window" and "person + time window" queries exist.
    assert {"ix_passages_checkpoint_time", "ix_passages_person_time"} <= {
        ix.name for ix in Base.metadata.tables["passages"].indexes
    }
