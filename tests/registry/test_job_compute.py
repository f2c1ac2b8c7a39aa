"""A job's ``compute`` block after creation: the worker's allocation and the engine's start
event join what the job asked for (SQLite and PostgreSQL), each told by an event."""

from __future__ import annotations

from typing import Any

from registry.db import session_scope
from registry.jobs import get_job, list_events
from registry.progress import record_allocation, record_start
from steering_core.engine.events import StartEvent
from tests.db_fixtures import add_file, add_job
from tests.registry.helpers import new_tenant

ASKED = {
    "gpus": 2,
    "processes": 2,
    "deepspeed": {"zero_stage": "auto", "offload_optimizer": False, "offload_param": False},
}


def _job(url: str, **fields: Any) -> str:
    tenant = new_tenant()
    with session_scope(url) as session:
        return add_job(session, tenant, add_file(session, tenant).id, **fields).id


def _start(**overrides: Any) -> StartEvent:
    fields: dict[str, Any] = {
        "total_steps": 6,
        "n_epochs": 1,
        "batch_size": 8,
        "n_examples": 48,
        "trainable_parameters": 1536,
        "trainable_percent": 3.4285714,
        "backend": "deepspeed",
        "world_size": 2,
        "zero_stage": 2,
    }
    return StartEvent.model_validate({**fields, **overrides})


def _newest_event(url: str, job_id: str, starting: str = "") -> tuple[str, str, Any]:
    """The newest event, or the newest whose message starts with ``starting`` (a job of "auto"
    hyperparameters gets the numbers chosen for it right after its start event)."""
    with session_scope(url) as session:
        events, _ = list_events(session, job_id, after=None, limit=10)
        found = next(e for e in events if e.message.startswith(starting))
        return found.message, found.level, found.data


def test_allocation_then_start_merge_into_the_stored_block(db_url: str) -> None:
    job_id = _job(db_url, gpus=2, queue="gpu2", compute=ASKED)
    with session_scope(db_url) as session:
        record_allocation(
            session, get_job(session, job_id), worker="w1", devices=[0, 1], cpu_slots=[]
        )
    message, level, data = _newest_event(db_url, job_id)
    assert (message, level) == ("Running on worker w1: 2 ranks, GPUs 0,1", "info")
    assert data == {"worker": "w1", "devices": [0, 1], "cpu_slots": []}

    event = _start()
    with session_scope(db_url) as session:
        record_start(session, get_job(session, job_id), event)
    with session_scope(db_url) as session:
        job = get_job(session, job_id)
        assert job.total_steps == 6
        assert job.compute == {
            **ASKED,
            "worker": "w1",
            "devices": [0, 1],
            "cpu_slots": [],
            "world_size": 2,
            "backend": "deepspeed",
            "zero_stage": 2,
        }
    message, level, data = _newest_event(db_url, job_id, "Training")
    assert message == (
        "Training 48 examples for 6 steps (1,536 trainable parameters, 3.429%) "
        "on 2 ranks (deepspeed, ZeRO 2)"
    )
    assert data == event.model_dump(mode="json")


def test_a_cpu_job_on_one_rank_of_plain_torch(db_url: str) -> None:
    job_id = _job(db_url, compute={"gpus": 0, "processes": 1, "deepspeed": None})
    with session_scope(db_url) as session:
        record_allocation(session, get_job(session, job_id), worker="w2", devices=[], cpu_slots=[3])
    assert _newest_event(db_url, job_id)[0] == "Running on worker w2: 1 rank, CPU slots 3"
    with session_scope(db_url) as session:
        event = _start(backend="torch", world_size=1, zero_stage=None, resumed_from_step=4)
        record_start(session, get_job(session, job_id), event)
    assert _newest_event(db_url, job_id, "Training")[0].endswith(
        "3.429%) on 1 rank (torch), resumed from step 4"
    )
    with session_scope(db_url) as session:
        compute = get_job(session, job_id).compute
    assert compute == {
        "gpus": 0,
        "processes": 1,
        "deepspeed": None,
        "worker": "w2",
        "devices": [],
        "cpu_slots": [3],
        "world_size": 1,
        "backend": "torch",
        "zero_stage": None,
    }


def test_a_row_without_a_block_gets_the_one_it_could_have_asked_for(db_url: str) -> None:
    job_id = _job(db_url, gpus=1, queue="gpu1")
    with session_scope(db_url) as session:
        assert get_job(session, job_id).compute is None
        record_start(session, get_job(session, job_id), _start(world_size=1, zero_stage=0))
    with session_scope(db_url) as session:
        assert get_job(session, job_id).compute == {
            "gpus": 1,
            "processes": 1,
            "deepspeed": None,
            "world_size": 1,
            "backend": "deepspeed",
            "zero_stage": 0,
        }
