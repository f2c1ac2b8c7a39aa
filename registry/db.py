"""Engine and sessions. SQLite gets WAL and foreign keys; PostgreSQL a fixed-size pool.

No pre-ping on checkout: it cost a round trip per request (status reads went from 858/s to
1060/s without it, benchmarks/service). A connection that died with its server raises a
disconnect error once; SQLAlchemy then invalidates the whole pool, so after a PostgreSQL restart
only the requests in flight fail (503 ``database_unavailable``) and the next ones reconnect.
Connections are recycled after 30 minutes, before idle timeouts in between can cut them.

A value the database cannot hold (PostgreSQL's NUL in text or an integer beyond a column; SQLite's
integer beyond 64 bits; a lone surrogate for either driver) raises
:class:`~registry.errors.InvalidValue` instead of the driver's error, so that no caller takes a
bad request for a database outage (the API answers 400, not 503).
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache

from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.exc import DataError
from sqlalchemy.orm import Session, sessionmaker

from registry.errors import InvalidValue

# Pooled connections per process to PostgreSQL. The API admits as many requests at once
# (api/limits.py ConcurrencyLimit), so a burst neither opens and closes overflow connections nor
# blocks threads in a pool checkout; the 10 overflow connections serve the uncounted streams.
POOL_SIZE = 20


def invalid_value(context: ExceptionContext) -> InvalidValue | None:
    """The :class:`InvalidValue` a statement's error amounts to, or None for any other error.

    PostgreSQL's data exceptions (SQLSTATE class 22: ``integer out of range``, ``value too long``,
    and psycopg's own "text fields cannot contain NUL" before sending) arrive as
    ``sqlalchemy.exc.DataError``; SQLite's driver raises ``OverflowError`` for an integer beyond
    64 bits; both drivers raise ``UnicodeEncodeError`` for a lone surrogate. The message keeps the
    driver's first line, never the statement or its parameters."""
    original = context.original_exception
    if isinstance(context.sqlalchemy_exception, DataError):
        lines = str(original).strip().splitlines()
        reason = lines[0] if lines else type(original).__name__
    elif isinstance(original, OverflowError):
        reason = f"an integer is out of range ({original})"
    elif isinstance(original, UnicodeEncodeError):
        reason = "text is not valid Unicode (it holds a lone surrogate)"
    else:
        return None
    return InvalidValue(f"a value of this request cannot be stored or looked up: {reason}")


@lru_cache(maxsize=8)
def get_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = _sqlite_engine(url)
    else:
        engine = create_engine(url, pool_size=POOL_SIZE, max_overflow=10, pool_recycle=1800)
    event.listen(engine, "handle_error", invalid_value, retval=True)
    return engine


def _sqlite_engine(url: str) -> Engine:
    engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        # Let SQLAlchemy, not pysqlite, open transactions (pysqlite's own handling breaks
        # SAVEPOINT), and take the write lock at BEGIN: SQLite then serialises writers
        # instead of failing a read-then-write transaction that lost a race.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(connection) -> None:  # type: ignore[no-untyped-def]
        connection.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


@lru_cache(maxsize=8)
def session_factory(url: str) -> sessionmaker[Session]:
    """One factory per database (building a sessionmaker per request cost a measurable share)."""
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def session_scope(url: str) -> Iterator[Session]:
    """A session committed on success and rolled back on error."""
    session = session_factory(url)()
    try:
        yield session
        session.commit()
    except BaseException:
        session.rollback()
        raise
    finally:
        session.close()


@contextmanager
def read_scope(url: str) -> Iterator[Session]:
    """A session for reading: always rolled back, so a read can never commit a stray change."""
    session = session_factory(url)()
    try:
        yield session
    finally:
        session.rollback()
        session.close()


def lock_until_commit(session: Session, name: str) -> None:
    """Serialise the transactions that take the lock ``name`` until each ends. PostgreSQL takes
    a transaction-scoped advisory lock; SQLite's write lock (taken at ``BEGIN IMMEDIATE``)
    already serialises every writer."""
    if session.get_bind().dialect.name == "postgresql":
        key = zlib.crc32(name.encode())
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})
