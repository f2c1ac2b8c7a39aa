"""Jobs: retrieval with tenant isolation, newest-first pages, progress and metrics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from registry.db import session_scope
from registry.errors import NotFound
from registry.jobs import get_job, list_jobs
from registry.progress import metrics_of, record_progress
from tests.db_fixtures import add_file, add_job

from .helpers import new_tenant, utc

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_a_created_job_is_queued_with_its_fields(db_url: str) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        training = add_file(session, tenant)
        validation = add_file(session, tenant, filename="valid.jsonl")
        job = add_job(
            session,
            tenant,
            training.id,
            validation_file=validation.id,
            hyperparameters={"n_epochs": 2},
            suffix="demo",
            metadata_={"team": "a"},
        )
        job_id = job.id
    assert job_id.startswith("ftjob-")
    with session_scope(db_url) as session:
        job = get_job(session, job_id, tenant)
        assert job.status == "queued"
        assert (job.training_file, job.validation_file) == (training.id, validation.id)
        assert job.method == {"type": "post_block"}
        assert job.hyperparameters == {"n_epochs": 2}
        assert (job.seed, job.suffix, job.metadata_) == (42, "demo", {"team": "a"})
        assert (job.attempts, job.lease_token, job.cancel_requested) == (0, 0, False)
        assert (job.queue, job.gpus, job.result_files) == ("cpu", 0, [])
        assert job.started_at is None and job.finished_at is None
        assert job.created_at is not None


def test_get_job_is_scoped_to_its_tenant(db_url: str) -> None:
    tenant_a, tenant_b = new_tenant(), new_tenant()
    with session_scope(db_url) as session:
        job_b = add_job(session, tenant_b, add_file(session, tenant_b).id).id
    with session_scope(db_url) as session:
        assert get_job(session, job_b).id == job_b
        assert get_job(session, job_b, tenant_b).id == job_b
        with pytest.raises(NotFound) as caught:
            get_job(session, job_b, tenant_a)
        assert caught.value.identifier == job_b
        with pytest.raises(NotFound):
            get_job(session, "ftjob-doesnotexist")


def test_list_jobs_pages_newest_first_per_tenant(db_url: str) -> None:
    tenant_a, tenant_b = new_tenant(), new_tenant()
    # Explicit creation times, two of them equal: ties are broken by id.
    times = [T0, T0 + timedelta(seconds=1), T0 + timedelta(seconds=1), T0 + timedelta(seconds=2)]
    times += [T0 + timedelta(seconds=3)]
    with session_scope(db_url) as session:
        file_a = add_file(session, tenant_a).id
        created = [(at, add_job(session, tenant_a, file_a, created_at=at).id) for at in times]
        file_b = add_file(session, tenant_b).id
        job_b = add_job(session, tenant_b, file_b, created_at=T0 + timedelta(seconds=1)).id
    expected = [job_id for _, job_id in sorted(created, reverse=True)]

    with session_scope(db_url) as session:
        seen: list[str] = []
        flags: list[bool] = []
        after: str | None = None
        for _ in range(10):
            jobs, has_more = list_jobs(session, tenant_a, after=after, limit=2)
            seen += [job.id for job in jobs]
            flags.append(has_more)
            if not has_more:
                break
            after = jobs[-1].id
        assert seen == expected
        assert flags == [True, True, False]
        jobs, has_more = list_jobs(session, tenant_a, after=None, limit=5)
        assert [job.id for job in jobs] == expected and has_more is False
        assert [utc(job.created_at) for job in jobs] == sorted(times, reverse=True)

        jobs, has_more = list_jobs(session, tenant_b, after=None, limit=20)
        assert [job.id for job in jobs] == [job_b] and has_more is False
        assert list_jobs(session, new_tenant(), after=None, limit=20) == ([], False)
        with pytest.raises(NotFound):
            list_jobs(session, tenant_a, after=job_b, limit=2)  # another tenant's anchor


def test_record_progress_and_metrics(db_url: str) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        job = add_job(session, tenant, add_file(session, tenant).id)
        job_id = job.id
        before = datetime.now(UTC)
        record_progress(
            session,
            job,
            step=10,
            total=100,
            trained_tokens=640,
            eta_seconds=90.0,
            metrics={"loss": 2.5, "lr": 1e-3},
        )
        record_progress(
            session, job, step=20, total=100, trained_tokens=1280, eta_seconds=None, metrics={}
        )
        record_progress(
            session,
            job,
            step=30,
            total=100,
            trained_tokens=1920,
            eta_seconds=60.0,
            metrics={"loss": 2},
        )
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert (job.current_step, job.total_steps, job.trained_tokens) == (30, 100, 1920)
        eta = utc(job.estimated_finish)
        assert before + timedelta(seconds=59) < eta < datetime.now(UTC) + timedelta(seconds=61)
        rows = [(m.step, m.name, m.value) for m in metrics_of(session, job_id)]
        assert rows == [(10, "loss", 2.5), (10, "lr", 1e-3), (30, "loss", 2.0)]
        assert all(isinstance(value, float) for _, _, value in rows)
