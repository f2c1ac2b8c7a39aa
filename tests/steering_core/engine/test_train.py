"""The trainer, in-process: learning, determinism, resume, validation, manifest."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from steering_core.artifact.store import read_artifact_config
from steering_core.engine.train import TrainingCancelled, train
from steering_core.spec.training_spec import TrainingSpec
from tests.steering_core.train_helpers import spec_dict, write_sums


class Collect:
    def __init__(self) -> None:
        self.events: list = []

    def emit(self, event) -> None:
        self.events.append(event)


def _stop_on_call(n: int):
    """A ``should_stop`` that answers True from its ``n``-th call on."""
    calls = {"n": 0}

    def should_stop() -> bool:
        calls["n"] += 1
        return calls["n"] >= n

    return should_stop


def _spec(tmp_path: Path, **overrides) -> TrainingSpec:
    data = write_sums(tmp_path / "train.jsonl")
    return TrainingSpec.model_validate(spec_dict(data, **overrides))


def test_training_learns_and_reports(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        hyperparameters={"n_epochs": 6},
        validation_file=str(write_sums(tmp_path / "val.jsonl", n=16, seed=1)),
        eval_every_n_steps=6,
    )
    reporter = Collect()
    result = train(spec, tmp_path / "out", reporter)
    kinds = [e.event for e in reporter.events]
    assert kinds[0] == "start" and kinds[-1] == "end"
    start = reporter.events[0]
    # 48 rows / batch 4 = 12 micro-batches per epoch, grad-accum 2 -> 6 steps per epoch
    assert start.total_steps == 36 == result.total_steps
    steps = [e for e in reporter.events if e.event == "step"]
    assert [e.step for e in steps] == list(range(1, 37))
    assert all(e.tokens_per_second > 0 and e.eta_seconds is not None for e in steps)
    assert steps[-1].eta_seconds == 0
    evals = [e for e in reporter.events if e.event == "eval"]
    assert [e.step for e in evals] == [6, 12, 18, 24, 30, 36]
    assert evals[-1].validation_loss < evals[0].validation_loss
    assert sum(result.losses[-6:]) < sum(result.losses[:6])
    assert result.trained_tokens == sum(e.trained_tokens for e in steps[-1:])
    config = read_artifact_config(result.artifact_dir)
    manifest = config.training_manifest
    assert manifest["seed"] == 7 and manifest["spec"]["model"] == "tiny-llama"
    assert len(manifest["datasets"]["train"]["sha256"]) == 64
    assert len(manifest["tokenizer_sha256"]) == 64
    assert manifest["base_model"]["content_hash"] == config.base_model.content_hash
    assert manifest["hardware"]["device"] == "cpu"
    assert {"torch", "transformers", "peft", "deepspeed"} <= set(manifest["library_versions"])


def test_same_seed_same_adapter_bytes(tmp_path: Path) -> None:
    spec = _spec(tmp_path)
    first = train(spec, tmp_path / "a").artifact_dir
    second = train(spec, tmp_path / "b").artifact_dir
    a = (first / "adapter_model.safetensors").read_bytes()
    b = (second / "adapter_model.safetensors").read_bytes()
    assert a == b
    other = train(spec.model_copy(update={"seed": 8}), tmp_path / "c").artifact_dir
    assert (other / "adapter_model.safetensors").read_bytes() != a


@pytest.mark.parametrize("method", [{"type": "post_block"}, {"type": "joint"}, {"type": "lora"}])
def test_resume_after_cancel_matches_uninterrupted_run(tmp_path: Path, method: dict) -> None:
    spec = _spec(tmp_path, method=method, checkpoint_every_n_steps=4)
    full = train(spec, tmp_path / "full")
    with pytest.raises(TrainingCancelled):
        train(spec, tmp_path / "resumed", should_stop=_stop_on_call(6))
    reporter = Collect()
    resumed = train(spec, tmp_path / "resumed", reporter, resume=True)
    assert reporter.events[0].resumed_from_step == 4
    assert resumed.losses == full.losses
    a = (
        load_file(str(full.artifact_dir / "adapter_model.safetensors"))
        if method["type"] != "lora"
        else {}
    )
    b = (
        load_file(str(resumed.artifact_dir / "adapter_model.safetensors"))
        if method["type"] != "lora"
        else {}
    )
    for key in a:
        assert torch.equal(a[key], b[key]), key
    if method["type"] in ("lora", "joint"):
        la = load_file(str(full.artifact_dir / "lora" / "adapter_model.safetensors"))
        lb = load_file(str(resumed.artifact_dir / "lora" / "adapter_model.safetensors"))
        assert la.keys() == lb.keys() and all(torch.equal(la[k], lb[k]) for k in la)


def test_group_by_length_changes_the_order_resumes_exactly_and_trains_every_row(
    tmp_path: Path,
) -> None:
    plain = train(_spec(tmp_path, hyperparameters={"n_epochs": 2}), tmp_path / "plain")
    spec = _spec(
        tmp_path,
        hyperparameters={"n_epochs": 2, "group_by_length": True},
        checkpoint_every_n_steps=4,
    )
    full = train(spec, tmp_path / "full")
    assert full.losses != plain.losses  # another data order
    assert full.trained_tokens == plain.trained_tokens  # the same rows, each once per epoch
    with pytest.raises(TrainingCancelled):
        train(spec, tmp_path / "resumed", should_stop=_stop_on_call(6))
    resumed = train(spec, tmp_path / "resumed", resume=True)
    assert resumed.losses == full.losses
    manifest = read_artifact_config(full.artifact_dir).training_manifest
    assert manifest["spec"]["hyperparameters"]["group_by_length"] is True


def test_checkpoints_are_complete_and_pruned(tmp_path: Path) -> None:
    spec = _spec(tmp_path, checkpoint_every_n_steps=2, keep_checkpoints=2)
    reporter = Collect()
    train(spec, tmp_path / "out", reporter)
    saved = sorted(p.name for p in (tmp_path / "out" / "checkpoints").iterdir())
    assert saved == ["step-000010", "step-000012"]
    assert [e.step for e in reporter.events if e.event == "checkpoint"] == [2, 4, 6, 8, 10, 12]
    last = tmp_path / "out" / "checkpoints" / "step-000012"
    assert read_artifact_config(last / "adapter").method.type == "post_block"
    for name in (
        "trainer_state.json",
        "trainable.safetensors",
        "optimizer.safetensors",
        "rng.safetensors",
    ):
        assert (last / name).is_file()


def test_early_stopping_restores_the_best_adapter(tmp_path: Path) -> None:
    # A learning rate this high diverges: validation gets worse, so training stops early.
    spec = _spec(
        tmp_path,
        hyperparameters={"n_epochs": 10, "learning_rate": 0.5, "lr_scheduler": "constant"},
        validation_file=str(write_sums(tmp_path / "val.jsonl", n=16, seed=1)),
        eval_every_n_steps=2,
        early_stopping_patience=2,
    )
    result = train(spec, tmp_path / "out")
    assert result.status == "early_stopped" and result.step < result.total_steps
    best = min(v for _, v in result.validation_losses[:-1])
    assert result.validation_losses[-1][1] == pytest.approx(best, rel=1e-5)


def test_keep_best_validation_saves_the_best_adapter_of_a_full_run(tmp_path: Path) -> None:
    """No early stop: every step runs, and the adapter saved is the best evaluated one's. The
    validation answers are a word where training teaches digits, so validation does not keep
    improving to the last step."""
    validation = tmp_path / "val.jsonl"
    validation.write_text(
        "".join(
            json.dumps({"prompt": f"{a}+{a}=", "completion": "banana"}) + "\n" for a in range(10)
        )
    )
    spec = _spec(
        tmp_path,
        hyperparameters={"n_epochs": 6, "learning_rate": 0.05, "lr_scheduler": "constant"},
        validation_file=str(validation),
        eval_every_n_steps=2,
        keep_best_validation=True,
    )
    result = train(spec, tmp_path / "out")
    assert result.status == "succeeded" and result.step == result.total_steps
    evaluated = result.validation_losses[:-1]
    best_step, best = min(evaluated, key=lambda pair: pair[1])
    assert best_step < result.step, "the last evaluation is not the best"
    assert result.validation_losses[-1][1] == pytest.approx(best, rel=1e-5)
    manifest = read_artifact_config(result.artifact_dir).training_manifest
    assert manifest["result"]["best_validation_step"] == best_step == result.restored_step


def test_joint_separate_learning_rates_reach_the_optimizer(tmp_path: Path) -> None:
    spec = _spec(
        tmp_path,
        method={"type": "joint", "orthogonality": {"every_n_steps": 2}},
        hyperparameters={
            "learning_rate": 1e-3,
            "steering_learning_rate": 2e-2,
            "lr_scheduler": "constant",
            "warmup_ratio": 0.0,
        },
    )
    result = train(spec, tmp_path / "out")
    resolved = read_artifact_config(result.artifact_dir).training_manifest[
        "resolved_hyperparameters"
    ]
    assert resolved["learning_rate"] == 1e-3 and resolved["steering_learning_rate"] == 2e-2


def test_planned_tokens_are_exactly_the_tokens_trained(tmp_path: Path) -> None:
    """The quota check counts before step 1 what the loop then feeds through the model."""
    from steering_core.engine.plan import DataPlan

    spec = _spec(tmp_path, hyperparameters={"n_epochs": 3, "batch_size": 5})
    reporter = Collect()
    result = train(spec, tmp_path / "out", reporter)
    start = reporter.events[0]
    plan = DataPlan(
        n_rows=start.n_examples,
        batch_size=5,
        world_size=1,
        grad_accum=2,
        n_epochs=3,
        seed=spec.seed,
    )
    from steering_core.data.batches import tokenize_dataset
    from steering_core.data.formats import parse_jsonl
    from steering_core.model.loading import load_tokenizer

    rows = tokenize_dataset(
        parse_jsonl(spec.train_file), load_tokenizer("tiny-llama"), max_seq_length=512
    )
    assert plan.total_steps == result.total_steps
    assert plan.planned_tokens([len(r.input_ids) for r in rows]) == result.trained_tokens


def test_max_training_tokens_refuses_before_the_first_step(tmp_path: Path) -> None:
    from steering_core.errors import QuotaExceededError

    reporter = Collect()
    allowed = train(_spec(tmp_path, max_training_tokens=10**9), tmp_path / "ok", reporter)
    used = allowed.trained_tokens
    # exactly the tokens it needs is allowed; one fewer is not
    assert train(_spec(tmp_path, max_training_tokens=used), tmp_path / "exact").trained_tokens
    refused = Collect()
    with pytest.raises(QuotaExceededError, match=rf"{used:,} tokens.*quota of {used - 1:,}"):
        train(_spec(tmp_path, max_training_tokens=used - 1), tmp_path / "over", refused)
    assert refused.events == []  # not one step, not even a start event
    assert not (tmp_path / "over" / "adapter").exists()


def test_manifest_records_per_layer_shift_statistics(tmp_path: Path) -> None:
    from steering_core.data.batches import collate
    from steering_core.engine.layer_stats import layer_statistics
    from steering_core.model.loading import load_model
    from steering_core.steering.attach import attach_method

    result = train(_spec(tmp_path), tmp_path / "out")
    stats = read_artifact_config(result.artifact_dir).training_manifest["layer_stats"]
    assert [s["layer"] for s in stats] == [0, 1, 2]
    for entry in stats:
        assert entry["residual_norm"] > 0 and entry["shift_norm"] > 0  # trained: not zero
        assert entry["relative_shift"] == pytest.approx(
            entry["shift_norm"] / entry["residual_norm"]
        )
        assert entry["parameter_norm"] > 0
    # at init (W_up = 0) the shift is exactly zero: the statistic measures the adapter
    fresh = attach_method(load_model("tiny-llama"), {"type": "post_block"})
    batch = collate([{"input_ids": [5, 6, 7], "labels": [5, 6, 7]}], 0)
    zero = layer_statistics(fresh, [batch])
    assert all(s["shift_norm"] == 0 and s["residual_norm"] > 0 for s in zero)


def test_a_resume_reports_again_every_event_the_kept_checkpoints_do_not_account_for(
    tmp_path: Path,
) -> None:
    """A worker's recording can lag the training by more than a checkpoint interval; if it dies
    then, the resume must report again every step since the checkpoint before the oldest kept
    one, not only those since the newest (which left a hole in the job's metrics)."""
    spec = _spec(tmp_path, checkpoint_every_n_steps=2, keep_checkpoints=2)
    with pytest.raises(TrainingCancelled):
        train(spec, tmp_path / "run", should_stop=_stop_on_call(7))  # checkpoints 2, 4, 6
    reporter = Collect()
    train(spec, tmp_path / "run", reporter, resume=True)
    assert reporter.events[0].resumed_from_step == 6
    replayed = []
    for event in reporter.events[1:]:
        if event.event == "checkpoint":
            break
        if event.event == "step":
            replayed.append(event.step)
    assert replayed == [3, 4, 5, 6]  # since checkpoint 2, the one before the oldest kept (4)
