"""Pausing a running job through ``run_job`` on a real training subprocess (tiny-llama, SQLite):
the engine saves a checkpoint at its next step boundary and stops, the worker records ``paused``
and lets the job go; resumed, another run continues from that checkpoint to the end."""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from registry.db import session_scope
from registry.jobs import get_job, request_pause, resume_job
from registry.models import Checkpoint, JobEvent
from registry.progress import metrics_of
from registry.settings import Settings
from steering_core.spec.compute import ComputeRequest
from tests.db_fixtures import dispose_engine, migrated, sqlite_url
from tests.worker.helpers import events_of, job_row, run_in_thread, uploaded_job
from worker.runner import run_job

OWNER = "worker-test"
HYPERPARAMETERS = {"n_epochs": 2, "batch_size": 4, "learning_rate": 0.01}


@pytest.fixture
def settings(tmp_path: Path) -> Iterator[Settings]:
    url = migrated(sqlite_url(tmp_path))
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        lease_seconds=0.9,  # renewed every 0.3 s: the pause is seen at once
        checkpoint_every_n_steps=4,
        torch_threads=1,
    )
    settings.ensure_dirs()
    yield settings
    dispose_engine(url)


def wait_until_running(url: str, job_id: str, thread: threading.Thread) -> None:
    """Until a worker holds the job. Its training then takes seconds to start (torch, the
    model) while the pause reaches it within a lease renewal: it pauses at its first steps,
    never at the end (tiny-llama trains a step in tens of milliseconds)."""
    deadline = time.monotonic() + 60
    while job_row(url, job_id).status != "running":
        assert thread.is_alive() and time.monotonic() < deadline, "no worker took the job"
        time.sleep(0.02)


def _trained_steps_after(events: list[JobEvent], start: int) -> tuple[list[int], list[int]]:
    """The step events from ``events[start:]``: those re-reported from the checkpoint's saved
    state (before the checkpoint event that a resumed run reports again), and those trained."""
    reported: list[int] = []
    trained: list[int] = []
    target = reported
    for event in events[start:]:
        if event.message.startswith("Checkpoint saved at step") and target is reported:
            target = trained
        elif event.type == "metrics" and event.data and "train_loss" in event.data:
            target.append(int(event.data["step"]))
    return reported, trained


def test_a_paused_job_lets_its_worker_go_and_resumes_from_its_checkpoint(
    settings: Settings, tmp_path: Path
) -> None:
    url = settings.resolved_database_url
    job_id = uploaded_job(settings, tmp_path, **HYPERPARAMETERS)
    thread, outcome = run_in_thread(settings, job_id, OWNER)
    wait_until_running(url, job_id, thread)

    with session_scope(url) as session:
        request_pause(session, get_job(session, job_id))
    thread.join(timeout=60)

    assert outcome == {"result": "paused"}
    job = job_row(url, job_id)
    assert (job.status, job.pause_requested, job.lease_owner, job.finished_at) == (
        "paused",
        False,
        None,
        None,
    )
    paused_at, total = job.current_step, job.total_steps
    assert paused_at is not None and total is not None and 1 <= paused_at < total
    spec = settings.jobs_dir / job_id / "spec.json"
    processes = subprocess.run(["pgrep", "-f", str(spec)], capture_output=True, text=True)
    assert processes.stdout == "", "the training outlived the pause"
    # The checkpoint of the step it paused at: resumable state on disk, the artifact hashed.
    with session_scope(url) as session:
        row = session.scalar(
            select(Checkpoint).where(Checkpoint.job_id == job_id, Checkpoint.step == paused_at)
        )
        assert row is not None, f"no checkpoint at step {paused_at}"
        directory = Path(row.storage_path)
        assert sorted(row.files or {}) == ["adapter_model.safetensors", "steering_config.json"]
    assert (directory / "trainer_state.json").is_file()
    assert (directory / "optimizer.safetensors").is_file()
    messages = [e.message for e in events_of(url, job_id)]
    assert messages[-1] == "The job was paused"
    assert "Pause requested" in messages
    assert run_job(settings, job_id, "worker-stale-message") == "skipped"  # paused: unclaimable

    with session_scope(url) as session:
        resume_job(session, get_job(session, job_id))
    assert run_job(settings, job_id, "worker-next") == "succeeded"

    events = events_of(url, job_id)
    resumed = [e.message for e in events].index("The job was resumed")
    (start,) = [e for e in events[resumed:] if e.message.startswith("Training 48 examples")]
    assert start.data is not None and start.data["resumed_from_step"] == paused_at
    reported, trained = _trained_steps_after(events, resumed)
    assert all(step <= paused_at for step in reported)  # the checkpoint's own, told again
    assert trained == list(range(paused_at + 1, total + 1))  # not from step 1
    with session_scope(url) as session:
        losses = [m.step for m in metrics_of(session, job_id) if m.name == "train_loss"]
    assert losses == list(range(1, total + 1))  # each step once: re-reports replaced theirs
    job = job_row(url, job_id)
    assert (job.status, job.attempts, job.current_step) == ("succeeded", 2, total)
    assert job.fine_tuned_model is not None


@pytest.mark.slow
def test_a_two_rank_job_pauses_on_every_rank_and_resumes(tmp_path: Path) -> None:
    """torchrun ends with its own failure code when the ranks exit paused: the engine's end
    event tells the pause. Both ranks stop at the same step boundary, after the checkpoint."""
    url = migrated(sqlite_url(tmp_path))
    settings = Settings(
        data_dir=tmp_path / "data",
        database_url=url,
        lease_seconds=0.9,
        checkpoint_every_n_steps=4,
        torch_threads=1,
        worker_cpu_slots=2,
    )
    settings.ensure_dirs()
    compute = ComputeRequest.model_validate(
        {"processes": 2, "deepspeed": {"zero_stage": 2}}
    ).normalised()
    try:
        job_id = uploaded_job(settings, tmp_path, compute=compute, **HYPERPARAMETERS)
        thread, outcome = run_in_thread(settings, job_id, OWNER)
        wait_until_running(url, job_id, thread)
        with session_scope(url) as session:
            request_pause(session, get_job(session, job_id))
        thread.join(timeout=120)
        assert outcome == {"result": "paused"}
        job = job_row(url, job_id)
        assert job.status == "paused" and job.compute is not None
        assert job.compute["world_size"] == 2
        paused_at = job.current_step
        assert paused_at is not None and job.total_steps is not None
        assert 1 <= paused_at < job.total_steps
        spec = settings.jobs_dir / job_id / "spec.json"
        processes = subprocess.run(["pgrep", "-f", str(spec)], capture_output=True, text=True)
        assert processes.stdout == "", "a rank outlived the pause"

        with session_scope(url) as session:
            resume_job(session, get_job(session, job_id))
        assert run_job(settings, job_id, "worker-next") == "succeeded"
        events = events_of(url, job_id)
        resumed = [e.message for e in events].index("The job was resumed")
        _, trained = _trained_steps_after(events, resumed)
        assert trained == list(range(paused_at + 1, job.total_steps + 1))
    finally:
        dispose_engine(url)
