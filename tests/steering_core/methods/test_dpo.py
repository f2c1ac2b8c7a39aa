"""``dpo``: preference training of a steering adapter whose reference is the same model with the
adapter switched off. Real tiny models, real training through the engine."""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from pydantic import ValidationError

from steering_core.artifact.store import load_artifact, read_artifact_config
from steering_core.data.formats import parse_jsonl
from steering_core.engine.train import train
from steering_core.errors import ConfigValidationError
from steering_core.methods.base import LossContext, get_method_handler
from steering_core.methods.dpo.handler import answer_log_probs, tokenize_preferences
from steering_core.methods.registry import parse_method
from steering_core.model.loading import build_tiny_model, build_tiny_tokenizer, load_model
from steering_core.spec.training_spec import Hyperparameters, TrainingSpec, resolve_hyperparameters
from steering_core.steering.attach import attach_method
from tests.steering_core.helpers import randomize_adapters, randomize_lora
from tests.steering_core.train_helpers import (
    Collect,
    assert_prefers_the_preferred,
    assert_resumes_to_the_same_adapter,
    spec_dict,
    write_preferences,
    write_sums,
)


def _batch(tmp_path: Path, n: int = 6) -> dict[str, torch.Tensor]:
    dataset = parse_jsonl(write_preferences(tmp_path / "pairs.jsonl", n=n))
    rows = tokenize_preferences(dataset, build_tiny_tokenizer(), max_seq_length=64)
    return get_method_handler("dpo").collate(list(rows.rows), pad_id=rows.pad_token_id)


def _objective(attached: Any, method: Any, base: torch.nn.Module) -> Any:
    hp = resolve_hyperparameters("dpo", Hyperparameters(beta=0.5), n_examples=6)
    return get_method_handler("dpo").training_loss(
        attached, LossContext(method=method, hyperparameters=hp, load_base_model=lambda: base)
    )


@pytest.mark.parametrize(
    ("trains", "reference"),
    [
        ({"type": "post_block"}, "adapters_off"),
        ({"type": "joint"}, "adapters_off"),
        ({"type": "post_block"}, "separate_copy"),
    ],
)
def test_the_reference_is_the_untouched_base_model_exactly(
    tmp_path: Path, trains: dict[str, Any], reference: str
) -> None:
    torch.manual_seed(0)
    model = build_tiny_model("llama", initializer_range=0.2)
    untouched = copy.deepcopy(model).eval()
    method = parse_method({"type": "dpo", "trains": trains, "reference": reference})
    attached = attach_method(model, method)
    randomize_adapters(attached, seed=1)
    if trains["type"] == "joint":
        randomize_lora(attached, seed=2)
    attached.model.eval()
    batch = _batch(tmp_path)
    objective = _objective(attached, method, copy.deepcopy(untouched))

    reference_logps = objective.reference_log_probs(attached.model, batch)
    with torch.no_grad():
        base_logps = answer_log_probs(untouched, batch)
        policy_logps = answer_log_probs(attached.model, batch)
    assert reference_logps.dtype == torch.float32 and reference_logps.shape == (12,)
    assert torch.equal(reference_logps, base_logps)
    assert not torch.allclose(policy_logps, base_logps), "the adapter must change the policy"
    # switching the adapter off for the reference leaves it on afterwards
    with torch.no_grad():
        assert torch.equal(answer_log_probs(attached.model, batch), policy_logps)


def _dpo_spec(root: Path, **overrides: Any) -> TrainingSpec:
    data = root / "pairs.jsonl"
    if not data.exists():
        write_preferences(data, n=32)
    spec = spec_dict(
        data,
        method={"type": "dpo"},
        hyperparameters={
            "batch_size": 8,
            "gradient_accumulation_steps": 1,
            "learning_rate": 3e-2,
            "beta": 1.0,
            "n_epochs": 8,
        },
    )
    for key, value in overrides.items():
        spec[key] = {**spec[key], **value} if isinstance(spec.get(key), dict) else value
    return TrainingSpec.model_validate(spec)


def _margins(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    with torch.no_grad():
        logps = answer_log_probs(model, batch)
    pairs = logps.shape[0] // 2
    return logps[:pairs] - logps[pairs:]


def test_dpo_trains_a_post_block_adapter_that_prefers_the_preferred(tmp_path: Path) -> None:
    reporter = Collect()
    result = train(_dpo_spec(tmp_path), tmp_path / "out", reporter)
    losses = reporter.losses()
    # policy = reference at step 0: every pair's loss is log 2
    assert losses[0] == pytest.approx(math.log(2), abs=1e-5)
    last_epoch = losses[-4:]  # 32 pairs, batches of 8
    assert sum(last_epoch) / 4 < 0.85 * losses[0], losses
    assert result.artifact_dir is not None
    config = read_artifact_config(result.artifact_dir)
    assert config.method.type == "post_block"  # an ordinary steering adapter
    assert config.training_manifest["spec"]["method"]["type"] == "dpo"

    batch = _batch(tmp_path, n=32)
    base = load_model("tiny-llama")
    steered = load_artifact(load_model("tiny-llama"), result.artifact_dir)
    trained = _margins(steered.model, batch)
    with steered.trained_parts_disabled():
        switched_off = _margins(steered.model, batch)
    base_margins = _margins(base, batch)
    assert torch.equal(switched_off, base_margins)
    assert_prefers_the_preferred(trained, base_margins)


def test_a_separate_reference_copy_trains_the_same_adapter(tmp_path: Path) -> None:
    runs = {}
    for reference in ("adapters_off", "separate_copy"):
        reporter = Collect()
        spec = _dpo_spec(
            tmp_path,
            method={"type": "dpo", "reference": reference},
            hyperparameters={"max_steps": 4},
        )
        train(spec, tmp_path / reference, reporter)
        runs[reference] = reporter.losses()
    assert len(runs["adapters_off"]) == 4
    assert runs["adapters_off"] == runs["separate_copy"]


def test_dpo_trains_joints_two_halves(tmp_path: Path) -> None:
    spec = _dpo_spec(
        tmp_path,
        method={"type": "dpo", "trains": {"type": "joint"}},
        hyperparameters={"max_steps": 6},
    )
    reporter = Collect()
    result = train(spec, tmp_path / "out", reporter)
    assert result.artifact_dir is not None
    assert read_artifact_config(result.artifact_dir).method.type == "joint"
    assert reporter.losses()[-1] < reporter.losses()[0]


def test_beta_belongs_to_dpo_alone() -> None:
    with pytest.raises(ConfigValidationError, match=r"hyperparameters.beta applies to the dpo"):
        resolve_hyperparameters("post_block", Hyperparameters(beta=0.2), n_examples=10)
    assert resolve_hyperparameters("dpo", Hyperparameters(), n_examples=10).beta == 0.1
    assert resolve_hyperparameters("dpo", Hyperparameters(beta=0.3), n_examples=10).beta == 0.3
    assert resolve_hyperparameters("post_block", Hyperparameters(), n_examples=10).beta is None


def test_each_method_refuses_the_other_kind_of_file(tmp_path: Path) -> None:
    pairs = write_preferences(tmp_path / "pairs.jsonl", n=8)
    sums = write_sums(tmp_path / "sums.jsonl", n=8)
    spec = spec_dict(pairs, method={"type": "post_block"})
    with pytest.raises(ConfigValidationError, match=r"'preference' format.*post_block"):
        train(TrainingSpec.model_validate(spec), tmp_path / "a")
    spec = spec_dict(sums, method={"type": "dpo"})
    with pytest.raises(ConfigValidationError, match=r"'prompt_completion' format.*dpo"):
        train(TrainingSpec.model_validate(spec), tmp_path / "b")


def test_auto_layers_are_refused_with_dpo() -> None:
    method = {
        "type": "dpo",
        "trains": {"type": "post_block", "site": {"layers": "auto", "max_layers": 1}},
    }
    with pytest.raises(ValidationError, match=r'trains\.site\.layers "auto" is not available'):
        parse_method(method)


def test_a_pair_is_dropped_whole_when_either_answer_cannot_fit(tmp_path: Path) -> None:
    path = tmp_path / "pairs.jsonl"
    lines = [
        {
            "input": {"messages": [{"role": "user", "content": "x" * n}]},
            "preferred_output": [{"role": "assistant", "content": "yes"}],
            "non_preferred_output": [{"role": "assistant", "content": "no"}],
        }
        for n in (2, 200)
    ]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    rows = tokenize_preferences(parse_jsonl(path), build_tiny_tokenizer(), max_seq_length=64)
    assert len(rows) == 1 and rows.stats.n_dropped_all_masked == 1
    assert rows.rows[0].line == 1


def test_a_cancelled_dpo_run_resumes_to_the_same_adapter(tmp_path: Path) -> None:
    spec = _dpo_spec(tmp_path, hyperparameters={"max_steps": 8}).model_copy(
        update={"checkpoint_every_n_steps": 4}
    )
    assert_resumes_to_the_same_adapter(spec, tmp_path)
