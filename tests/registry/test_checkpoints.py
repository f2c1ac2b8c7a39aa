"""Checkpoints: one row per (job, step), re-saving a step updates it; newest-first pages; a
checkpoint's model id resolves to its hashed adapter artifact."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from registry.checkpoints import resolve_checkpoint_model
from registry.db import session_scope
from registry.errors import NotFound
from registry.jobs import get_job
from registry.models import Checkpoint
from registry.progress import add_checkpoint, list_checkpoints, record_checkpoint
from registry.storage import artifact_digest
from steering_core.engine.events import CheckpointEvent
from steering_core.hashing import sha256_file
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


# -- a checkpoint as a model: ``ftjob-…:ckpt-step-N`` ------------------------------------------


def _recorded(url: str, tmp_path: Path, tenant: str, step: int, *, artifact: bool) -> str:
    """A job with one checkpoint recorded as the worker records it (its artifact hashed)."""
    directory = tmp_path / f"step-{step:06d}"
    if artifact:
        (directory / "adapter" / "lora").mkdir(parents=True)
        (directory / "adapter" / "steering_config.json").write_text("{}")
        (directory / "adapter" / "lora" / "adapter_model.safetensors").write_bytes(b"lora")
    else:
        directory.mkdir(parents=True)
    with session_scope(url) as session:
        job = add_job(session, tenant, add_file(session, tenant).id, method={"type": "lora"})
        record_checkpoint(session, job, CheckpointEvent(step=step, path=str(directory)))
        return job.id


def test_a_checkpoint_model_id_resolves_to_its_hashed_artifact(db_url: str, tmp_path: Path) -> None:
    tenant = new_tenant()
    job_id = _recorded(db_url, tmp_path, tenant, 50, artifact=True)
    with session_scope(db_url) as session:
        artifact = resolve_checkpoint_model(session, f"{job_id}:ckpt-step-50", tenant)
    directory = tmp_path / "step-000050" / "adapter"
    assert artifact.directory == directory
    assert artifact.files == {
        name: sha256_file(directory / name)
        for name in ("lora/adapter_model.safetensors", "steering_config.json")
    }
    assert artifact.sha256 == artifact_digest(directory).sha256
    assert (artifact.model_id, artifact.job_id, artifact.step) == (
        f"{job_id}:ckpt-step-50",
        job_id,
        50,
    )
    assert (artifact.base_model, artifact.method) == ("tiny-llama", "lora")
    assert artifact.method_config == {"type": "lora"}


def test_what_names_no_servable_checkpoint_is_not_found(db_url: str, tmp_path: Path) -> None:
    tenant = new_tenant()
    job_id = _recorded(db_url, tmp_path / "a", tenant, 50, artifact=True)
    full_job = _recorded(db_url, tmp_path / "b", tenant, 8, artifact=False)
    with session_scope(db_url) as session:
        checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.job_id == job_id))
        assert checkpoint is not None
        checkpoint_id = checkpoint.id
    for model_id, tenant_id, mentions in (
        (f"{job_id}:ckpt-step-50", new_tenant(), "fine-tuning job"),  # another tenant's
        (f"{job_id}:ckpt-step-49", tenant, "no such checkpoint"),  # never saved, or pruned
        (f"{full_job}:ckpt-step-8", tenant, "holds no adapter artifact"),
        ("ftjob-nope:ckpt-step-50", tenant, "fine-tuning job"),
        (job_id, tenant, "<job id>:ckpt-step-<step>"),
        (checkpoint_id, tenant, "<job id>:ckpt-step-<step>"),  # an id, not a model id
        (f"{job_id}:ckpt-step-x", tenant, "<job id>:ckpt-step-<step>"),
    ):
        with session_scope(db_url) as session, pytest.raises(NotFound, match=mentions):
            resolve_checkpoint_model(session, model_id, tenant_id)
    with session_scope(db_url) as session:  # recorded before checkpoints kept their hashes
        session.get_one(Checkpoint, checkpoint_id).files = None
    with session_scope(db_url) as session, pytest.raises(NotFound, match="without the hashes"):
        resolve_checkpoint_model(session, f"{job_id}:ckpt-step-50", tenant)


def test_a_checkpoint_the_engine_pruned_before_it_was_recorded_has_no_artifact(
    db_url: str, tmp_path: Path
) -> None:
    """The recorder may run behind the engine, which keeps its last checkpoints only."""
    tenant = new_tenant()
    with session_scope(db_url) as session:
        job = add_job(session, tenant, add_file(session, tenant).id)
        gone = str(tmp_path / "step-000004")
        record_checkpoint(session, job, CheckpointEvent(step=4, path=gone))
    with session_scope(db_url) as session:
        (checkpoint,), _ = list_checkpoints(session, job.id, after=None, limit=10)
        assert (checkpoint.step, checkpoint.files, checkpoint.sha256) == (4, None, None)
