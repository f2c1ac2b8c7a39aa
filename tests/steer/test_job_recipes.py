"""How `steer jobs create` turns a recipe file and flags into a job body."""

from __future__ import annotations

from pathlib import Path

from steer.job_body import build_job_body, read_recipe

NO_HP = {"n_epochs": None, "learning_rate": None, "batch_size": None}


def _body(recipe: dict, **flags) -> dict:
    base = {
        "model": None,
        "training_file": None,
        "method": None,
        "site": None,
        "layers": None,
        "rank": None,
        "hyperparameters": NO_HP,
        "suffix": None,
        "seed": None,
    }
    return build_job_body(recipe, **{**base, **flags})


def test_yaml_recipe_with_flags_on_top(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "model: smollm2-135m-instruct\n"
        "method:\n"
        "  type: joint\n"
        "  joint:\n"
        "    lora: {rank: 4}\n"
        "    hyperparameters: {n_epochs: 2, learning_rate: 0.0002}\n"
    )
    body = _body(
        read_recipe(path),
        training_file="file-1",
        layers="0-2,5",
        rank=16,
        hyperparameters={**NO_HP, "n_epochs": 3},
    )
    assert body == {
        "model": "smollm2-135m-instruct",
        "training_file": "file-1",
        "method": {
            "type": "joint",
            "joint": {
                "lora": {"rank": 4},
                "adapter": {"rank": 16},
                "site": {"layers": [0, 1, 2, 5]},
                "hyperparameters": {"n_epochs": 3, "learning_rate": 0.0002},
            },
        },
    }


def test_flags_alone_and_method_specific_rank(tmp_path: Path) -> None:
    assert _body({}, model="m", training_file="f")["method"] == {"type": "post_block"}
    assert _body({}, method="lora", rank=8)["method"] == {
        "type": "lora",
        "lora": {"lora": {"rank": 8}},
    }
    assert _body({}, method="reft", rank=2, site="mlp_output")["method"] == {
        "type": "reft",
        "reft": {"site": {"name": "mlp_output"}, "rank": 2},
    }
    # a recipe for one method does not leak its block into another chosen by flag
    recipe = {"method": {"type": "joint", "joint": {"lora": {"rank": 4}}}}
    assert _body(recipe, method="post_block")["method"] == {"type": "post_block"}
    json_recipe = tmp_path / "job.json"
    json_recipe.write_text('{"model": "tiny-llama", "seed": 4}')
    assert _body(read_recipe(json_recipe), seed=9)["seed"] == 9


NO_COMPUTE = {
    "gpus": None,
    "processes": None,
    "zero_stage": None,
    "offload_optimizer": None,
    "offload_param": None,
}


def test_compute_flags_fill_the_compute_block() -> None:
    assert "compute" not in _body({}, compute=NO_COMPUTE)
    assert "compute" not in _body({})
    body = _body(
        {}, compute={**NO_COMPUTE, "gpus": 2, "zero_stage": "2", "offload_optimizer": True}
    )
    assert body["compute"] == {
        "gpus": 2,
        "deepspeed": {"zero_stage": 2, "offload_optimizer": True},
    }
    auto = _body({}, compute={**NO_COMPUTE, "processes": 4, "zero_stage": "auto"})
    assert auto["compute"] == {"processes": 4, "deepspeed": {"zero_stage": "auto"}}


def test_a_recipes_compute_block_with_flags_on_top(tmp_path: Path) -> None:
    path = tmp_path / "job.yaml"
    path.write_text(
        "model: tiny-llama\n"
        "gpus: 1\n"
        "compute:\n"
        "  processes: 2\n"
        "  deepspeed: {zero_stage: auto, offload_param: true}\n"
    )
    recipe = read_recipe(path)
    assert _body(recipe, compute=NO_COMPUTE)["compute"] == recipe["compute"]  # as written
    assert _body(recipe, compute=NO_COMPUTE)["gpus"] == 1
    body = _body(
        recipe,
        compute={**NO_COMPUTE, "gpus": 4, "zero_stage": "3", "offload_param": False},
    )
    assert "gpus" not in body  # --gpus replaces the recipe's shorthand
    assert body["compute"] == {
        "gpus": 4,
        "processes": 2,
        "deepspeed": {"zero_stage": 3, "offload_param": False},
    }
