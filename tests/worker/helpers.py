"""Small helpers shared by the worker tests: jobs in a given state, and what the registry holds."""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

from registry import files as files_repo
from registry import storage
from registry.db import session_scope
from registry.jobs import get_job, list_events
from registry.models import Job, JobEvent
from registry.settings import Settings
from tests.db_fixtures import add_file, add_job
from tests.registry.helpers import new_tenant
from tests.steering_core.train_helpers import write_sums
from worker.runner import run_job


def queued_job(url: str, **overrides: object) -> str:
    tenant = new_tenant()
    with session_scope(url) as session:
        return add_job(session, tenant, add_file(session, tenant).id, **overrides).id


def expire_lease(url: str, job_id: str) -> None:
    """The worker holding the job died: its lease ran out a second ago."""
    with session_scope(url) as session:
        get_job(session, job_id).lease_expires_at = datetime.now(UTC) - timedelta(seconds=1)


def job_row(url: str, job_id: str) -> Job:
    """The job's row as it is now (a detached copy; sessions don't expire on commit)."""
    with session_scope(url) as session:
        return get_job(session, job_id)


def events_of(url: str, job_id: str) -> list[JobEvent]:
    """The job's events, oldest first."""
    with session_scope(url) as session:
        events, has_more = list_events(session, job_id, after=None, limit=1000, newest_first=False)
    assert not has_more
    return events


def uploaded_job(
    settings: Settings,
    tmp_path: Path,
    *,
    compute: dict[str, object] | None = None,
    **hyperparameters: object,
) -> str:
    """A queued job on tiny-llama over an uploaded (content-addressed) copy of 48 sums
    (``compute``: the stored, normalised compute block; one process without it)."""
    data = write_sums(tmp_path / "sums.jsonl").read_bytes()
    sha = hashlib.sha256(data).hexdigest()
    temp = settings.files_dir / "upload.tmp"
    temp.write_bytes(data)
    with session_scope(settings.resolved_database_url) as session:
        path = storage.content_path(sha, ".jsonl")
        storage.place_content(session, settings.files_dir, temp, path)
        file = files_repo.create_file(
            session,
            tenant_id="default",
            filename="sums.jsonl",
            purpose="fine-tune",
            bytes=len(data),
            sha256=sha,
            storage_path=path,
            status="processed",
        )
        hyper = hyperparameters or {"n_epochs": 2, "batch_size": 4, "learning_rate": 0.01}
        extra = {} if compute is None else {"compute": compute}
        return add_job(session, "default", file.id, hyperparameters=hyper, **extra).id


def run_in_thread(
    settings: Settings, job_id: str, owner: str
) -> tuple[threading.Thread, dict[str, str]]:
    """``run_job`` in a thread of its own; the dict gets its ``result``."""
    outcome: dict[str, str] = {}
    thread = threading.Thread(
        target=lambda: outcome.update(result=run_job(settings, job_id, owner)), daemon=True
    )
    thread.start()
    return thread, outcome
