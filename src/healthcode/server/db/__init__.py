"""Persistence: SQLAlchemy 2 models, the engine and the unit-of-work runner."""

from healthcode.server.db.base import Base, new_id, utcnow
from healthcode.server.db.engine import Database, create_db_engine

__all__ = ["Base", "Database", "create_db_engine", "new_id", "utcnow"]
