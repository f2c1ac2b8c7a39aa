"""Checkpoints: one row per (job, step), re-saving a step updates it; newest-first pages."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from registry.db import session_scope
from registry.errors import NotFound
from registry.jobs import get_job
from registry.models import Checkpoint
from registry.progress import add_checkpoint, list_checkpoints
from tests.db_fixtures import add_file, add_job

from .helpers import new_tenant


def _checkpoint_count(url: str, job_id: str) -> int:
    with session_scope(url) as session:
        return session.scalar(select(func.count()).where(Checkpoint.job_id == job_id)) or 0


def test_the_same_step_twice_updates_the_checkpoint(db_url: str) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        job = add_job(session, tenant, add_file(session, tenant).id)
        job_id = job.id
        first = add_checkpoint(session, job, step=10, path="ckpt/10-a", metrics={"loss": 3.0})
        again = add_checkpoint(session, job, step=10, path="ckpt/10-b", metrics={"loss": 2.9})
        assert again.id == first.id
    assert _checkpoint_count(db_url, job_id) == 1

    with session_scope(db_url) as session:  # a resumed run saves the same step again
        job = get_job(session, job_id)
        add_checkpoint(session, job, step=10, path="ckpt/10-c", metrics=None)
    assert _checkpoint_count(db_url, job_id) == 1
    with session_scope(db_url) as session:
        (checkpoint,), has_more = list_checkpoints(session, job_id, after=None, limit=10)
        assert has_more is False
        assert (checkpoint.id, checkpoint.step) == (first.id, 10)
        assert (checkpoint.storage_path, checkpoint.metrics) == ("ckpt/10-c", None)


def test_checkpoints_page_newest_step_first(db_url: str) -> None:
    tenant = new_tenant()
    with session_scope(db_url) as session:
        job = add_job(session, tenant, add_file(session, tenant).id)
        other = add_job(session, tenant, add_file(session, tenant).id)
        job_id = job.id
        for step in (5, 15, 10, 20):
            add_checkpoint(session, job, step=step, path=f"ckpt/{step}", metrics={"step": step})
        foreign = add_checkpoint(session, other, step=7, path="other/7", metrics=None)
        session.flush()
        foreign_id = foreign.id
    with session_scope(db_url) as session:
        page, has_more = list_checkpoints(session, job_id, after=None, limit=3)
        assert [c.step for c in page] == [20, 15, 10] and has_more is True
        rest, has_more = list_checkpoints(session, job_id, after=page[-1].id, limit=3)
        assert [c.step for c in rest] == [5] and has_more is False
        with pytest.raises(NotFound):
            list_checkpoints(session, job_id, after=foreign_id, limit=3)
        with pytest.raises(NotFound):
            list_checkpoints(session, job_id, after="ftckpt-doesnotexist", limit=3)
