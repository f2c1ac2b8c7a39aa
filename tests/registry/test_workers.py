"""The workers table and admission (SQLite and PostgreSQL): registration is an upsert, a
heartbeat moves ``last_seen_at``, capacity is the largest worker seen, and admission refuses a
job larger than every worker ever registered and warns when none seen lately can run it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import update

from registry.db import session_scope
from registry.models import Worker
from registry.workers import (
    Admission,
    WorkerCapacity,
    admission,
    capacity,
    register_worker,
    touch_worker,
)
from tests.registry.helpers import utc


def _register(url: str, name: str, *, gpus: int = 0, cpu_slots: int = 2) -> None:
    queues = ["cpu", *(f"gpu{n}" for n in range(1, gpus + 1))]
    with session_scope(url) as session:
        register_worker(session, name=name, gpus=gpus, cpu_slots=cpu_slots, queues=queues)


def _last_seen(url: str, name: str, seconds_ago: float) -> None:
    with session_scope(url) as session:
        session.execute(
            update(Worker)
            .where(Worker.name == name)
            .values(last_seen_at=datetime.now(UTC) - timedelta(seconds=seconds_ago))
        )


def _row(url: str, name: str) -> Worker:
    with session_scope(url) as session:
        row = session.get(Worker, name)
        assert row is not None
        return row


def _admit(url: str, compute: dict[str, object], recent: float = 300.0) -> Admission:
    with session_scope(url) as session:
        return admission(session, compute, recent_seconds=recent)


def test_register_is_an_upsert_that_keeps_first_seen(db_url: str) -> None:
    _register(db_url, "w1", gpus=2, cpu_slots=8)
    first = _row(db_url, "w1")
    assert (first.gpus, first.cpu_slots, first.queues) == (2, 8, ["cpu", "gpu1", "gpu2"])
    assert utc(first.first_seen_at) == utc(first.last_seen_at)

    _last_seen(db_url, "w1", 60)
    _register(db_url, "w1", gpus=1, cpu_slots=4)  # restarted with one GPU
    again = _row(db_url, "w1")
    assert (again.gpus, again.cpu_slots, again.queues) == (1, 4, ["cpu", "gpu1"])
    assert utc(again.first_seen_at) == utc(first.first_seen_at)
    assert utc(again.last_seen_at) > utc(first.last_seen_at)
    with session_scope(db_url) as session:
        assert session.query(Worker).count() == 1


def test_touch_moves_last_seen_and_tells_an_unknown_worker(db_url: str) -> None:
    _register(db_url, "w1")
    _last_seen(db_url, "w1", 120)
    before = utc(_row(db_url, "w1").last_seen_at)
    with session_scope(db_url) as session:
        assert touch_worker(session, "w1") is True
        assert touch_worker(session, "nobody") is False
    assert utc(_row(db_url, "w1").last_seen_at) - before > timedelta(seconds=100)


def test_capacity_is_the_largest_worker_seen_since(db_url: str) -> None:
    with session_scope(db_url) as session:
        assert capacity(session, None) is None
    _register(db_url, "gpu-box", gpus=4, cpu_slots=2)
    _register(db_url, "cpu-box", gpus=0, cpu_slots=16)
    _last_seen(db_url, "gpu-box", 3600)
    now = datetime.now(UTC)
    with session_scope(db_url) as session:
        assert capacity(session, None) == WorkerCapacity(gpus=4, cpu_slots=16, workers=2)
        recent = capacity(session, now - timedelta(seconds=60))
        assert recent == WorkerCapacity(gpus=0, cpu_slots=16, workers=1)
        assert capacity(session, now + timedelta(seconds=60)) is None


def test_admission_before_any_worker_warns(db_url: str) -> None:
    verdict = _admit(db_url, {"gpus": 2, "processes": 2, "deepspeed": None})
    assert verdict.verdict == "warn" and verdict.param is None
    assert "No worker has registered yet" in verdict.message and "2 GPUs" in verdict.message


def test_admission_refuses_a_job_larger_than_every_worker(db_url: str) -> None:
    _register(db_url, "small", gpus=1, cpu_slots=4)
    _register(db_url, "large", gpus=2, cpu_slots=2)
    _last_seen(db_url, "large", 10_000)  # gone, but it did exist: GPU jobs up to 2 may wait

    gpu = _admit(db_url, {"gpus": 4, "processes": 4, "deepspeed": None})
    assert (gpu.verdict, gpu.param) == ("refuse", "compute.gpus")
    assert "compute.gpus=4" in gpu.message and "2 GPUs" in gpu.message

    cpu = _admit(db_url, {"gpus": 0, "processes": 8, "deepspeed": {"zero_stage": "auto"}})
    assert (cpu.verdict, cpu.param) == ("refuse", "compute.processes")
    assert "compute.processes=8" in cpu.message and "4 CPU slots" in cpu.message


def test_admission_warns_when_no_recent_worker_can_run_it(db_url: str) -> None:
    _register(db_url, "small", gpus=1, cpu_slots=4)
    _register(db_url, "large", gpus=2, cpu_slots=2)
    _last_seen(db_url, "large", 10_000)

    waits = _admit(db_url, {"gpus": 2, "processes": 2, "deepspeed": None})
    assert waits.verdict == "warn" and waits.param is None
    assert "last 300 s" in waits.message and "2 GPUs" in waits.message
    assert _admit(db_url, {"gpus": 1, "processes": 1, "deepspeed": None}).verdict == "ok"
    assert _admit(db_url, {"gpus": 0, "processes": 4, "deepspeed": None}).verdict == "ok"
    # a heartbeat brings the large one back
    with session_scope(db_url) as session:
        touch_worker(session, "large")
    assert _admit(db_url, {"gpus": 2, "processes": 2, "deepspeed": None}).verdict == "ok"
    # a shorter window sees no one
    _last_seen(db_url, "small", 30)
    _last_seen(db_url, "large", 30)
    assert _admit(db_url, {"gpus": 1}, recent=10).verdict == "warn"


@pytest.mark.parametrize(
    ("compute", "verdict"),
    [
        ({"gpus": 0}, "ok"),  # one process by default
        ({"gpus": 0, "processes": 2}, "ok"),
        ({"gpus": 0, "processes": 3}, "refuse"),
        ({"gpus": 1}, "refuse"),  # only a CPU worker has registered
    ],
)
def test_admission_of_cpu_jobs_counts_cpu_slots(
    db_url: str, compute: dict[str, object], verdict: str
) -> None:
    _register(db_url, "cpu-only", gpus=0, cpu_slots=2)
    assert _admit(db_url, compute).verdict == verdict
