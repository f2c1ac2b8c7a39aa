"""Worker fixtures: the registry's per-test databases (SQLite and PostgreSQL), settings over
one of them, and a job claimed by "this" worker."""

from __future__ import annotations

from pathlib import Path

import pytest

from registry.settings import Settings
from tests.registry.conftest import db_url
from tests.worker.helpers import queued_job
from worker.leased_job import LeasedJob

__all__ = ["db_url", "leased", "worker_settings"]


@pytest.fixture
def worker_settings(db_url: str, tmp_path: Path) -> Settings:
    settings = Settings(data_dir=tmp_path / "data", database_url=db_url, db_retry_seconds=5.0)
    settings.ensure_dirs()
    return settings


@pytest.fixture
def leased(worker_settings: Settings) -> LeasedJob:
    """A queued job, claimed by this worker (lease token 1)."""
    job_id = queued_job(worker_settings.resolved_database_url)
    claimed = LeasedJob.claim(worker_settings, job_id, "worker-test")
    assert claimed is not None and claimed.token == 1
    return claimed
