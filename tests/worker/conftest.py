"""Worker fixtures: the registry's per-test databases (SQLite and PostgreSQL)."""

from tests.registry.conftest import db_url

__all__ = ["db_url"]
