"""``method: {"type": "dpo"}`` through the API: OpenAI's shape, its preference files, and the 400s
that name the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.helpers import JOBS, Api, assert_error
from tests.steering_core.train_helpers import write_preferences


@pytest.fixture(scope="module")
def preference_file(shared_api: Api, tmp_path_factory: pytest.TempPathFactory) -> str:
    path = write_preferences(Path(tmp_path_factory.mktemp("pairs")) / "pairs.jsonl", n=8)
    uploaded = shared_api.upload_ok(path.read_bytes(), filename="pairs.jsonl")
    assert uploaded["status"] == "processed" and uploaded["format"] == "preference"
    return str(uploaded["id"])


def _job(file_id: str, method: dict[str, Any]) -> dict[str, Any]:
    return {"model": "tiny-llama", "training_file": file_id, "method": method}


def test_a_dpo_job_in_openais_shape_is_accepted(shared_api: Api, preference_file: str) -> None:
    method = {
        "type": "dpo",
        "dpo": {
            "hyperparameters": {"beta": 0.25, "n_epochs": 2},
            "trains": {"type": "post_block", "site": {"layers": [1, 2]}, "adapter": {"rank": 2}},
        },
    }
    response = shared_api.create_job(_job(preference_file, method))
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["method"]["type"] == "dpo"
    block = job["method"]["dpo"]
    assert block["hyperparameters"]["beta"] == 0.25
    assert block["trains"]["site"]["layers"] == [1, 2]
    assert block["trains"]["adapter"]["rank"] == 2
    assert block["reference"] == "adapters_off"
    assert job["hyperparameters"]["beta"] == 0.25
    listed = shared_api.get_json(f"{JOBS}/{job['id']}")
    assert listed["method"]["dpo"]["trains"]["type"] == "post_block"


def test_dpo_defaults_to_a_post_block_adapter_and_beta_0_1(
    shared_api: Api, preference_file: str
) -> None:
    response = shared_api.create_job(_job(preference_file, {"type": "dpo"}))
    assert response.status_code == 200, response.text
    job = response.json()
    assert job["method"]["dpo"]["trains"]["type"] == "post_block"
    assert job["hyperparameters"]["beta"] == 0.1


@pytest.mark.parametrize(
    ("method", "param", "mentions"),
    [
        (
            {"type": "dpo", "dpo": {"hyperparameters": {"beta": -1}}},
            "method.dpo.hyperparameters.beta",
            ("greater than 0",),
        ),
        (
            {"type": "dpo", "dpo": {"trains": {"type": "lora"}}},
            "method.dpo.trains",
            ("post_block", "joint"),
        ),
        (
            {"type": "dpo", "dpo": {"trains": {"type": "post_block", "site": {"layers": [9]}}}},
            "method.dpo.trains.site.layers",
            ("3 decoder layers",),
        ),
        (
            {
                "type": "dpo",
                "dpo": {
                    "trains": {"type": "post_block", "site": {"layers": "auto", "max_layers": 1}}
                },
            },
            "method.dpo.trains.site.layers",
            ('"auto"', "dpo"),
        ),
        (
            {"type": "dpo", "dpo": {"reference": "other_model"}},
            "method.dpo.reference",
            ("adapters_off",),
        ),
    ],
)
def test_a_bad_dpo_job_is_a_400_naming_the_field(
    shared_api: Api,
    preference_file: str,
    method: dict[str, Any],
    param: str,
    mentions: tuple[str, ...],
) -> None:
    response = shared_api.create_job(_job(preference_file, method))
    assert_error(response, 400, param=param, mentions=mentions)


def test_beta_on_another_method_is_a_400_naming_it(shared_api: Api, shared_file: str) -> None:
    method = {"type": "post_block", "post_block": {"hyperparameters": {"beta": 0.2}}}
    assert_error(
        shared_api.create_job(_job(shared_file, method)),
        400,
        param="method.post_block.hyperparameters.beta",
        mentions=("dpo method only",),
    )


def test_each_method_refuses_the_other_kind_of_file(
    shared_api: Api, shared_file: str, preference_file: str
) -> None:
    assert_error(
        shared_api.create_job(_job(shared_file, {"type": "dpo"})),
        400,
        param="training_file",
        mentions=("prompt_completion", "dpo", "preference"),
    )
    assert_error(
        shared_api.create_job(_job(preference_file, {"type": "post_block"})),
        400,
        param="training_file",
        mentions=("preference", "post_block"),
    )
