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
