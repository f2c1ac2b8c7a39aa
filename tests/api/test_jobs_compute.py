"""POST /v1/fine_tuning/jobs with a ``compute`` block: stored normalised and shown, the ``gpus``
shorthand, every refusal a 400 naming its field, and admission against the registered workers."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from registry.db import session_scope
from registry.jobs import get_job
from registry.workers import register_worker
from tests.api.helpers import JOBS, Api, assert_error

FILE = "$FILE"
AUTO = {"zero_stage": "auto", "offload_optimizer": False, "offload_param": False}


def _body(file_id: str, **fields: Any) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": file_id, **fields}


def _joint(**block: Any) -> dict[str, Any]:
    return {"type": "joint", "joint": block}


def _events(api: Api, job_id: str) -> list[tuple[str, str]]:
    """(level, message) of the job's events, oldest first."""
    data = api.get_json(f"{JOBS}/{job_id}/events")["data"]
    return [(e["level"], e["message"]) for e in reversed(data)]


def _register(api: Api, name: str, *, gpus: int, cpu_slots: int) -> None:
    with session_scope(api.settings.resolved_database_url) as session:
        register_worker(session, name=name, gpus=gpus, cpu_slots=cpu_slots, queues=["cpu"])


# -- accepted ------------------------------------------------------------------------------------


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_compute_is_stored_normalised_and_shown(make_api: Callable[..., Api], backend: str) -> None:
    api = make_api(backend)
    compute = {"gpus": 2, "deepspeed": {"zero_stage": 2, "offload_optimizer": True}}
    job = api.job_ok(compute=compute)
    stored = {
        "gpus": 2,
        "processes": 2,
        "deepspeed": {"zero_stage": 2, "offload_optimizer": True, "offload_param": False},
    }
    assert job["compute"] == stored
    assert api.get_json(f"{JOBS}/{job['id']}")["compute"] == stored
    assert api.get_json(JOBS)["data"][0]["compute"] == stored
    with session_scope(api.settings.resolved_database_url) as session:
        row = get_job(session, job["id"])
        assert (row.gpus, row.queue, row.compute) == (2, "gpu2", stored)


@pytest.mark.parametrize(
    ("fields", "stored"),
    [
        ({}, {"gpus": 0, "processes": 1, "deepspeed": None}),
        ({"compute": {}}, {"gpus": 0, "processes": 1, "deepspeed": None}),
        # several CPU processes always train through DeepSpeed
        ({"compute": {"processes": 2}}, {"gpus": 0, "processes": 2, "deepspeed": AUTO}),
        # one rank through DeepSpeed when asked
        (
            {"compute": {"deepspeed": {}}},
            {"gpus": 0, "processes": 1, "deepspeed": AUTO},
        ),
        # the shorthand, alone, equal to compute.gpus, or filling a block that leaves gpus out
        ({"gpus": 1}, {"gpus": 1, "processes": 1, "deepspeed": None}),
        ({"gpus": 2}, {"gpus": 2, "processes": 2, "deepspeed": AUTO}),
        ({"gpus": 2, "compute": {"gpus": 2}}, {"gpus": 2, "processes": 2, "deepspeed": AUTO}),
        (
            {"gpus": 2, "compute": {"deepspeed": {"zero_stage": 3, "offload_param": True}}},
            {
                "gpus": 2,
                "processes": 2,
                "deepspeed": {"zero_stage": 3, "offload_optimizer": False, "offload_param": True},
            },
        ),
        ({"gpus": 0, "compute": {"processes": 4}}, {"gpus": 0, "processes": 4, "deepspeed": AUTO}),
    ],
    ids=[
        "nothing",
        "empty-block",
        "cpu-ranks",
        "one-rank-deepspeed",
        "shorthand-1",
        "shorthand-2",
        "both-equal",
        "shorthand-fills-block",
        "shorthand-zero-with-processes",
    ],
)
def test_accepted_compute(
    shared_api: Api, shared_file: str, fields: dict[str, Any], stored: dict[str, Any]
) -> None:
    job = shared_api.job_ok(shared_file, **fields)
    assert job["compute"] == stored


def test_joint_trains_under_zero_0_only_unless_its_projection_is_off(
    shared_api: Api, shared_file: str
) -> None:
    refused = shared_api.create_job(
        _body(shared_file, method=_joint(), compute={"gpus": 2, "deepspeed": {"zero_stage": 2}})
    )
    assert_error(
        refused,
        400,
        param="compute.deepspeed.zero_stage",
        mentions=("joint", "zero_stage 2", "zero_stage 0", "auto"),
    )
    auto = shared_api.job_ok(shared_file, method=_joint(), compute={"gpus": 2})
    assert auto["compute"]["deepspeed"]["zero_stage"] == "auto"
    zero = shared_api.job_ok(
        shared_file, method=_joint(), compute={"gpus": 2, "deepspeed": {"zero_stage": 0}}
    )
    assert zero["compute"]["deepspeed"]["zero_stage"] == 0
    off = shared_api.job_ok(
        shared_file,
        method=_joint(orthogonality={"enabled": False}),
        compute={"gpus": 2, "deepspeed": {"zero_stage": 2}},
    )
    assert off["compute"]["deepspeed"]["zero_stage"] == 2


def test_batch_size_is_the_global_batch(shared_api: Api, shared_file: str) -> None:
    """An "auto" batch is chosen as a multiple of any number of ranks; 12 splits over 3 and 4."""
    for processes in (2, 3, 4):
        assert shared_api.job_ok(shared_file, compute={"processes": processes})
    method = {"type": "post_block", "post_block": {"hyperparameters": {"batch_size": 12}}}
    assert shared_api.job_ok(shared_file, method=method, compute={"gpus": 3})
    assert shared_api.job_ok(shared_file, hyperparameters={"batch_size": 12}, gpus=4)


# -- refused -------------------------------------------------------------------------------------

BATCH = "method.post_block.hyperparameters.batch_size"
INVALID: list[tuple[str, dict[str, Any], str, tuple[str, ...]]] = [
    # (id, fields, param, words the message must contain)
    ("gpus-disagree", {"gpus": 1, "compute": {"gpus": 2}}, "gpus", ("gpus=1", "compute.gpus=2")),
    ("gpus-zero-disagrees", {"gpus": 0, "compute": {"gpus": 2}}, "gpus", ("shorthand",)),
    ("compute-not-object", {"compute": 2}, "compute", ("compute",)),
    ("compute-unknown-field", {"compute": {"nodes": 2}}, "compute.nodes", ("nodes",)),
    ("gpus-negative", {"compute": {"gpus": -1}}, "compute.gpus", ("gpus",)),
    ("gpus-too-many", {"compute": {"gpus": 65}}, "compute.gpus", ("64",)),
    ("gpus-string", {"compute": {"gpus": "two"}}, "compute.gpus", ("integer",)),
    ("processes-zero", {"compute": {"processes": 0}}, "compute.processes", ("1",)),
    ("processes-too-many", {"compute": {"processes": 65}}, "compute.processes", ("64",)),
    (
        "processes-not-gpus",
        {"compute": {"gpus": 2, "processes": 4}},
        "compute.processes",
        ("processes=4", "gpus=2", "one rank per GPU"),
    ),
    (
        "processes-not-shorthand-gpus",
        {"gpus": 2, "compute": {"processes": 4}},
        "compute.processes",
        ("processes=4", "gpus=2"),
    ),
    ("deepspeed-not-object", {"compute": {"deepspeed": 1}}, "compute.deepspeed", ("deepspeed",)),
    (
        "zero-stage-5",
        {"compute": {"deepspeed": {"zero_stage": 5}}},
        "compute.deepspeed.zero_stage",
        ("auto", "3"),
    ),
    (
        "zero-stage-word",
        {"compute": {"deepspeed": {"zero_stage": "two"}}},
        "compute.deepspeed.zero_stage",
        ("auto",),
    ),
    (
        "deepspeed-unknown-field",
        {"compute": {"deepspeed": {"stage": 2}}},
        "compute.deepspeed.stage",
        ("stage",),
    ),
    (
        "offload-param-needs-zero-3",
        {"compute": {"deepspeed": {"zero_stage": 2, "offload_param": True}}},
        "compute.deepspeed.offload_param",
        ("offload_param", "zero_stage 3"),
    ),
    (
        "offload-optimizer-needs-a-stage",
        {"compute": {"deepspeed": {"zero_stage": 0, "offload_optimizer": True}}},
        "compute.deepspeed.offload_optimizer",
        ("offload_optimizer",),
    ),
    (
        "offload-not-boolean",
        {"compute": {"deepspeed": {"offload_param": "yes please"}}},
        "compute.deepspeed.offload_param",
        ("boolean",),
    ),
    (
        "batch-over-3-ranks",
        {"compute": {"processes": 3}, "hyperparameters": {"batch_size": 8}},
        BATCH,
        ("batch_size 8", "3 processes", "global", "6 or 9"),
    ),
    (
        "batch-over-4-gpus",
        {
            "gpus": 4,
            "method": {"type": "post_block", "post_block": {"hyperparameters": {"batch_size": 6}}},
        },
        BATCH,
        ("batch_size 6", "4 processes", "4 or 8"),
    ),
    (
        "batch-smaller-than-ranks",
        {"compute": {"processes": 4}, "hyperparameters": {"batch_size": 2}},
        BATCH,
        ("batch_size 2", "4 processes", "e.g. 4"),
    ),
    (
        "joint-offload-param-under-auto",
        {"method": _joint(), "compute": {"gpus": 2, "deepspeed": {"offload_param": True}}},
        "compute.deepspeed.offload_param",
        ("joint", "ZeRO 3"),
    ),
    (
        "joint-offload-optimizer-under-auto",
        {"method": _joint(), "compute": {"gpus": 2, "deepspeed": {"offload_optimizer": True}}},
        "compute.deepspeed.offload_optimizer",
        ("joint", "offload_optimizer"),
    ),
]


@pytest.mark.parametrize(
    ("fields", "param", "mentions"),
    [pytest.param(fields, param, mentions, id=case) for case, fields, param, mentions in INVALID],
)
def test_invalid_compute_is_400_with_param(
    shared_api: Api,
    shared_file: str,
    fields: dict[str, Any],
    param: str,
    mentions: tuple[str, ...],
) -> None:
    content = json.dumps(_body(shared_file, **fields)).encode()
    assert_error(shared_api.post_raw(JOBS, content), 400, param=param, mentions=mentions)


# -- admission -----------------------------------------------------------------------------------


def test_before_any_worker_registers_jobs_are_accepted_with_a_warning(api: Api) -> None:
    job = api.job_ok(compute={"gpus": 2})
    assert _events(api, job["id"]) == [
        ("info", f"Created fine-tuning job: {job['id']}"),
        (
            "warning",
            "No worker has registered yet: the job waits in its queue until a worker with "
            "2 GPUs starts",
        ),
    ]


def test_admission_against_registered_workers(api: Api) -> None:
    file_id = api.upload_ok()["id"]
    _register(api, "gpu-box", gpus=2, cpu_slots=4)

    too_big = api.create_job(_body(file_id, compute={"gpus": 4}))
    assert_error(
        too_big,
        400,
        param="compute.gpus",
        code="exceeds_worker_capacity",
        mentions=("compute.gpus=4", "2 GPUs"),
    )
    too_many = api.create_job(_body(file_id, compute={"processes": 8}))
    assert_error(
        too_many,
        400,
        param="compute.processes",
        code="exceeds_worker_capacity",
        mentions=("compute.processes=8", "4 CPU slots"),
    )
    assert api.get_json(JOBS)["data"] == []  # nothing stored

    fits = api.job_ok(file_id, compute={"gpus": 2})
    assert [level for level, _ in _events(api, fits["id"])] == ["info"]
    fits_cpu = api.job_ok(file_id, compute={"processes": 4})
    assert [level for level, _ in _events(api, fits_cpu["id"])] == ["info"]


def test_a_job_only_absent_workers_could_run_waits_with_a_warning(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(worker_seen_seconds=0.001)  # every registration is already old
    _register(api, "gpu-box", gpus=2, cpu_slots=4)
    job = api.job_ok(compute={"gpus": 2})
    (level, message) = _events(api, job["id"])[-1]
    assert level == "warning"
    assert "No worker seen in the last 0.001 s can run this job" in message
    assert "2 GPUs" in message
    assert_error(api.create_job(_body(job["training_file"], gpus=4)), 400, param="compute.gpus")
