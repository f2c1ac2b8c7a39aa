"""``run_job`` end to end on a real training subprocess (tiny-llama, SQLite): claim -> spec ->
supervise (recording events) -> finish; and the supervisor stopping the process group on a
cancel and on a lost lease. (The service tests run the same through Celery workers.)"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from registry import files as files_repo
from registry.db import session_scope
from registry.jobs import get_job, request_cancel
from registry.models import Adapter, Checkpoint
from registry.settings import Settings
from tests.db_fixtures import dispose_engine, migrated, sqlite_url
from tests.worker.helpers import events_of, expire_lease, job_row, run_in_thread, uploaded_job
from worker.leased_job import LeasedJob
from worker.runner import run_job

OWNER = "worker-test"
LONG = {"n_epochs": 500, "batch_size": 4, "learning_rate": 0.01}  # runs until stopped


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    url = migrated(sqlite_url(tmp_path))
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        lease_seconds=1.5,  # renewed every 0.5 s: a cancel or a takeover is seen at once
        checkpoint_every_n_steps=4,
        torch_threads=1,
    )
    settings.ensure_dirs()
    yield settings
    dispose_engine(url)


def _job(settings: Settings, tmp_path: Path, **hyperparameters: object) -> str:
    return uploaded_job(settings, tmp_path, **hyperparameters)


def _in_thread(settings: Settings, job_id: str) -> tuple[threading.Thread, dict[str, str]]:
    return run_in_thread(settings, job_id, OWNER)


def _wait_for_a_step(settings: Settings, job_id: str, thread: threading.Thread) -> None:
    deadline = time.monotonic() + 120
    while (job_row(settings.resolved_database_url, job_id).current_step or 0) < 1:
        assert thread.is_alive() and time.monotonic() < deadline, "training never took a step"
        time.sleep(0.2)


def _training_processes(spec: Path) -> str:
    time.sleep(0.3)  # the kernel reaps a killed group within moments
    return subprocess.run(["pgrep", "-f", str(spec)], capture_output=True, text=True).stdout


def test_a_job_runs_to_success_and_a_redelivery_is_skipped(
    settings: Settings, tmp_path: Path
) -> None:
    job_id = _job(settings, tmp_path)
    url = settings.resolved_database_url

    assert run_job(settings, job_id, OWNER) == "succeeded"

    job = job_row(url, job_id)
    assert (job.status, job.attempts, job.lease_owner) == ("succeeded", 1, None)
    spec = json.loads((settings.jobs_dir / job_id / "spec.json").read_text())
    with session_scope(url) as session:
        train = files_repo.get_file(session, job.training_file)
        assert spec["train_file"] == str(settings.files_dir / train.storage_path)
        (adapter,) = session.scalars(select(Adapter))
    assert (spec["checkpoint_every_n_steps"], spec["validation_file"]) == (4, None)
    assert job.fine_tuned_model == adapter.id and len(job.result_files) == 1
    assert sorted(adapter.files) == ["adapter_model.safetensors", "steering_config.json"]
    messages = [e.message for e in events_of(url, job_id)]
    total = job.total_steps
    assert messages[1] == f"Job started on {OWNER} (attempt 1)"
    assert messages[2] == f"Running on worker {OWNER}: 1 rank, CPU slots 0"
    assert messages[3].startswith(f"Training 48 examples for {total} steps")
    steps = [m for m in messages if m.startswith("Step ")]
    assert [m.split(":")[0] for m in steps] == [f"Step {s}/{total}" for s in range(1, total + 1)]
    assert "Checkpoint saved at step 4" in messages
    assert messages[-1] == "The job has successfully completed"
    statuses = [e.data["status"] for e in events_of(url, job_id) if e.data and "status" in e.data]
    assert statuses == ["running", "succeeded"]

    assert run_job(settings, job_id, "worker-again") == "skipped"
    assert len(events_of(url, job_id)) == len(messages)

    # The engine keeps the last 2 checkpoints; the rows follow, and after the success each keeps
    # its adapter artifact alone (no optimizer or RNG state, no copy of the stored adapter).
    with session_scope(url) as session:
        rows = session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id)).all()
        listed = sorted(Path(row.storage_path).name for row in rows)
    job_dir = settings.jobs_dir / job_id
    assert listed == sorted(p.name for p in (job_dir / "run" / "checkpoints").iterdir())
    assert listed == [f"step-{s:06d}" for s in range(total - total % 4 - 4, total + 1, 4)][-2:]
    kept = sorted(str(p.relative_to(job_dir)) for p in job_dir.rglob("*") if p.is_file())
    expected = ["spec.json"] + [
        f"run/checkpoints/{name}/adapter/{file}"
        for name in listed
        for file in ("adapter_model.safetensors", "steering_config.json")
    ]
    assert kept == sorted(expected), kept


def test_a_cancel_stops_the_process_group_and_cancels_the_job(
    settings: Settings, tmp_path: Path
) -> None:
    job_id = _job(settings, tmp_path, **LONG)
    thread, outcome = _in_thread(settings, job_id)
    _wait_for_a_step(settings, job_id, thread)

    with session_scope(settings.resolved_database_url) as session:
        request_cancel(session, get_job(session, job_id))
    thread.join(timeout=15)  # the lease renewal sees it within 0.5 s; SIGKILL after 8 s

    assert outcome == {"result": "cancelled"}
    job = job_row(settings.resolved_database_url, job_id)
    assert (job.status, job.lease_owner, job.fine_tuned_model) == ("cancelled", None, None)
    assert _training_processes(settings.jobs_dir / job_id / "spec.json") == ""


def test_a_lost_lease_kills_the_training_and_writes_nothing_more(
    settings: Settings, tmp_path: Path
) -> None:
    job_id = _job(settings, tmp_path, **LONG)
    url = settings.resolved_database_url
    thread, outcome = _in_thread(settings, job_id)
    _wait_for_a_step(settings, job_id, thread)

    expire_lease(url, job_id)  # as if this worker had stalled past its lease
    successor = LeasedJob.claim(settings, job_id, "worker-next")
    assert successor is not None
    thread.join(timeout=15)

    assert outcome == {"result": "lease_lost"}
    job = job_row(url, job_id)
    assert (job.status, job.lease_owner, job.lease_token) == ("running", "worker-next", 2)
    assert _training_processes(settings.jobs_dir / job_id / "spec.json") == ""
    events = len(events_of(url, job_id))
    time.sleep(1)
    assert len(events_of(url, job_id)) == events
