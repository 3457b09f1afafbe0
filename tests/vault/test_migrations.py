"""The vault's Alembic migrations produce the schema its models describe, and 0003 reverses."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine, inspect, select

from healthcode.vault.db import MIGRATIONS, create_vault_engine, migrate
from healthcode.vault.models import AUDIT_INDEX_FORMAT, audit_index_state, metadata


def _alembic(engine: Engine, action: str, revision: str) -> None:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        getattr(command, action)(config, revision)


def _diff(engine: Engine) -> list[object]:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"version_table": "vault_alembic_version"})
        return list(compare_metadata(context, metadata))


def test_migrations_match_models_and_0003_reverses(database_url: str) -> None:
    engine = create_vault_engine(database_url)
    try:
        migrate(engine)
        migrate(engine)  # a second run is a no-op
        assert _diff(engine) == []
        with engine.connect() as conn:
            assert conn.execute(select(audit_index_state.c.format)).scalar_one() == (
                AUDIT_INDEX_FORMAT
            )
        # Back to the in-schema index of 0002 and forward again: the old tables come and go.
        _alembic(engine, "downgrade", "0002")
        assert {"audit_token_index", "audit_index_state"} <= set(inspect(engine).get_table_names())
        migrate(engine)
        assert not {"audit_token_index", "audit_index_state"} & set(
            inspect(engine).get_table_names()
        )
        assert _diff(engine) == []
    finally:
        engine.dispose()
