"""Registry fixtures: each test gets a freshly migrated, empty SQLite and PostgreSQL database."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.db_fixtures import dispose_engine, fresh_postgres_database, migrated, sqlite_url

BACKENDS = ["sqlite", "postgres"]


@contextmanager
def _empty_database(backend: str, directory: Path) -> Iterator[str]:
    if backend == "sqlite":
        url = sqlite_url(directory)
        try:
            yield url
        finally:
            dispose_engine(url)
    else:
        with fresh_postgres_database() as url:
            yield url


@pytest.fixture(params=BACKENDS)
def empty_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database without any table (not migrated)."""
    with _empty_database(request.param, tmp_path) as url:
        yield url


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A freshly migrated, empty database of its own for this test."""
    with _empty_database(request.param, tmp_path) as url:
        yield migrated(url)


@pytest.fixture(scope="module", params=BACKENDS)
def module_db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """A migrated database shared by a module's tests (each must use its own rows)."""
    with _empty_database(request.param, tmp_path_factory.mktemp("registry")) as url:
        yield migrated(url)
