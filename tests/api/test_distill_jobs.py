"""``method: {"type": "distill"}`` through the API: the source named as an adapter id,
name@version or job id is stored as the adapter's id; what cannot be a source is a 400 naming
``method.distill.source``."""

from __future__ import annotations

from typing import Any

import pytest

from registry import jobs as jobs_repo
from registry.db import session_scope
from tests.api.helpers import Api, assert_error, register_adapter


@pytest.fixture(scope="module")
def source(shared_api: Api) -> dict[str, Any]:
    return register_adapter(
        shared_api, "teacher", files={"steering_config.json": b"{}"}, method={"type": "lora"}
    )


def _distill(api: Api, file_id: str, source: str, model: str = "tiny-llama") -> Any:
    return api.create_job(
        {
            "model": model,
            "training_file": file_id,
            "method": {"type": "distill", "distill": {"source": source}},
        }
    )


@pytest.mark.parametrize("how", ["id", "name@version", "name"])
def test_the_source_is_stored_as_the_adapters_id(
    shared_api: Api, shared_file: str, source: dict[str, Any], how: str
) -> None:
    reference = {"id": source["id"], "name@version": "teacher@1", "name": "teacher"}[how]
    response = _distill(shared_api, shared_file, reference)
    assert response.status_code == 200, response.text
    block = response.json()["method"]["distill"]
    assert block["source"] == source["id"]
    assert block["trains"]["type"] == "post_block"
    assert block["weights"] == {"hidden": 1.0, "kl": 1.0}


def test_a_job_id_stands_for_its_trained_adapter(
    shared_api: Api, shared_file: str, source: dict[str, Any]
) -> None:
    job = shared_api.job_ok(training_file=shared_file, method={"type": "lora"})
    assert_error(
        _distill(shared_api, shared_file, job["id"]),
        400,
        param="method.distill.source",
        mentions=(job["id"], "no trained adapter", "queued"),
    )
    with session_scope(shared_api.settings.resolved_database_url) as session:
        jobs_repo.get_job(session, job["id"]).fine_tuned_model = source["id"]
    response = _distill(shared_api, shared_file, job["id"])
    assert response.status_code == 200, response.text
    assert response.json()["method"]["distill"]["source"] == source["id"]


@pytest.mark.parametrize(
    ("reference", "mentions"),
    [
        ("adapter-missing", ("no adapter", "adapter-missing")),
        ("nobody@1", ("no adapter", "nobody@1")),
        ("ftjob-missing", ("no fine-tuning job", "ftjob-missing")),
    ],
)
def test_an_unknown_source_is_a_400(
    shared_api: Api, shared_file: str, reference: str, mentions: tuple[str, ...]
) -> None:
    assert_error(
        _distill(shared_api, shared_file, reference),
        400,
        param="method.distill.source",
        mentions=mentions,
    )


def test_a_source_on_another_base_model_is_a_400(shared_api: Api, shared_file: str) -> None:
    other = register_adapter(
        shared_api, "gemma-teacher", files={"x": b"1"}, base_model="tiny-gemma3"
    )
    assert_error(
        _distill(shared_api, shared_file, other["id"]),
        400,
        param="method.distill.source",
        mentions=("tiny-gemma3", "tiny-llama"),
    )


def test_another_tenants_adapter_is_not_a_source(shared_api: Api, shared_file: str) -> None:
    theirs = register_adapter(shared_api, "theirs", tenant="other", files={"x": b"1"})
    assert_error(
        _distill(shared_api, shared_file, theirs["id"]),
        400,
        param="method.distill.source",
        mentions=("no adapter",),
    )


def test_a_distill_job_needs_its_source(shared_api: Api, shared_file: str) -> None:
    response = shared_api.create_job(
        {"model": "tiny-llama", "training_file": shared_file, "method": {"type": "distill"}}
    )
    assert_error(response, 400, param="method.distill.source")
