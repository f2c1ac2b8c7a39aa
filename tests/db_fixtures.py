"""Database helpers for service tests: throwaway PostgreSQL databases, SQLite URLs, migrations.

Every database here is built by the Alembic migrations (``registry.migrate.upgrade``), never by
``metadata.create_all``, so the tests exercise the schema that production gets.

Typical use::

    with fresh_postgres_database() as url:
        migrated(url)
        with session_scope(url) as session:
            ...
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from sqlalchemy.orm import Session

from registry.db import get_engine
from registry.files import create_file
from registry.jobs import create_job
from registry.migrate import upgrade
from registry.models import File, Job

POSTGRES_HOST = "127.0.0.1"
POSTGRES_PORT = 5432
POSTGRES_USER = "postgres"
# The database we connect to in order to create and drop the throwaway ones.
POSTGRES_ADMIN_DATABASE = "test"
DATABASE_PREFIX = "steer_test"


def postgres_url(database: str) -> str:
    """SQLAlchemy URL of a database on the test server."""
    return f"postgresql+psycopg://{POSTGRES_USER}@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}"


def _admin_connection() -> psycopg.Connection[Any]:
    return psycopg.connect(
        host=POSTGRES_HOST,
        port=POSTGRES_PORT,
        user=POSTGRES_USER,
        dbname=POSTGRES_ADMIN_DATABASE,
        autocommit=True,
    )


def dispose_engine(url: str) -> None:
    """Close the pooled connections of the registry's cached engine for ``url``."""
    get_engine(url).dispose()


def drop_postgres_database(name: str) -> None:
    """Drop database ``name`` (if it exists), first ending every session connected to it."""
    dispose_engine(postgres_url(name))
    with _admin_connection() as connection:
        for attempt in range(5):
            connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = %s AND pid <> pg_backend_pid()",
                (name,),
            )
            try:
                connection.execute(
                    sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))
                )
                return
            except psycopg.errors.ObjectInUse:  # a pool reconnected between the two statements
                if attempt == 4:
                    raise
                time.sleep(0.1)


@contextmanager
def fresh_postgres_database(prefix: str = DATABASE_PREFIX) -> Iterator[str]:
    """An empty, uniquely named PostgreSQL database for the block; yields its SQLAlchemy URL.

    The database is dropped afterwards, even when the block fails. It is not migrated: wrap the
    URL in :func:`migrated` for the registry's schema.
    """
    name = f"{prefix}_{uuid.uuid4().hex[:16]}"
    with _admin_connection() as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield postgres_url(name)
    finally:
        drop_postgres_database(name)


def sqlite_url(directory: Path, filename: str = "registry.db") -> str:
    """SQLAlchemy URL of a SQLite database file in ``directory`` (created on first connect)."""
    return f"sqlite:///{(Path(directory) / filename).resolve()}"


def migrated(url: str) -> str:
    """Run the Alembic migrations up to head on ``url``; return ``url``."""
    upgrade(url)
    return url


def add_file(session: Session, tenant_id: str, **overrides: Any) -> File:
    """A processed training-file row (no bytes on disk) that jobs can reference."""
    fields: dict[str, Any] = {
        "filename": "train.jsonl",
        "purpose": "fine-tune",
        "bytes": 1,
        "sha256": "0" * 64,
        "storage_path": "x",
        "status": "processed",
    }
    fields.update(overrides)
    return create_file(session, tenant_id=tenant_id, **fields)


def add_job(session: Session, tenant_id: str, training_file: str, **overrides: Any) -> Job:
    """A queued job on the tiny test model with the default steering method."""
    fields: dict[str, Any] = {
        "model": "tiny-llama",
        "training_file": training_file,
        "method": {"type": "post_block"},
        "hyperparameters": {},
        "seed": 42,
    }
    fields.update(overrides)
    return create_job(session, tenant_id=tenant_id, **fields)
