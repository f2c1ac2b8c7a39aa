"""The spec a job becomes: its stored DeepSpeed settings reach the engine as they are."""

from __future__ import annotations

from typing import Any

import pytest

from registry.db import session_scope
from registry.jobs import get_job
from registry.settings import Settings
from tests.worker.helpers import queued_job
from worker.training_spec import training_spec_for

DEEPSPEED = {"zero_stage": "auto", "offload_optimizer": True, "offload_param": False}


@pytest.mark.parametrize(
    ("compute", "deepspeed"),
    [
        ({"gpus": 2, "processes": 2, "deepspeed": DEEPSPEED}, DEEPSPEED),
        ({"gpus": 0, "processes": 1, "deepspeed": None}, None),
        (None, None),  # a row stored without a compute block
    ],
    ids=["deepspeed", "plain-torch", "no-block"],
)
def test_the_jobs_deepspeed_block_is_the_specs(
    worker_settings: Settings, compute: dict[str, Any] | None, deepspeed: dict[str, Any] | None
) -> None:
    url = worker_settings.resolved_database_url
    job_id = queued_job(url, compute=compute)
    with session_scope(url) as session:
        spec = training_spec_for(session, worker_settings, get_job(session, job_id))
    assert (spec.deepspeed.model_dump() if spec.deepspeed else None) == deepspeed
    assert spec.model == "tiny-llama" and spec.method.type == "post_block"


def test_a_job_with_a_validation_file_validates_each_epoch_and_at_its_own_interval(
    worker_settings: Settings,
) -> None:
    from registry.files import get_file

    url = worker_settings.resolved_database_url
    settings = worker_settings.model_copy(update={"checkpoint_every_n_steps": 5})
    plain = queued_job(url)
    own = queued_job(url, hyperparameters={"eval_every_n_steps": 3})
    with session_scope(url) as session:
        for job_id in (plain, own):
            job = get_job(session, job_id)
            job.validation_file = get_file(session, job.training_file).id
        server = training_spec_for(session, settings, get_job(session, plain)).validation_plan()
        job = training_spec_for(session, settings, get_job(session, own)).validation_plan()
    assert (server.every_n_steps, server.each_epoch) == (5, True)
    assert (job.every_n_steps, job.each_epoch) == (3, True)
