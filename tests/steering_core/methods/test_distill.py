"""``distill``: a post-block adapter trained to reproduce a source model (a LoRA, a full fine-tune,
another steering adapter) from its block outputs and next-token distributions. Real tiny models,
real training through the engine."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from steering_core.artifact.store import load_artifact, read_artifact_config
from steering_core.data.batches import collate, tokenize_dataset
from steering_core.data.formats import parse_jsonl
from steering_core.engine.train import train
from steering_core.errors import ConfigValidationError
from steering_core.methods.registry import parse_method
from steering_core.model.loading import build_tiny_tokenizer, load_model
from steering_core.spec.training_spec import TrainingSpec
from tests.steering_core.train_helpers import (
    Collect,
    assert_resumes_to_the_same_adapter,
    spec_dict,
    train_tiny_artifact,
    write_sums,
)


@pytest.fixture(scope="module")
def lora_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA trained on the sums (the source to distil)."""
    root = tmp_path_factory.mktemp("lora_source")
    return train_tiny_artifact(
        root,
        method={"type": "lora"},
        hyperparameters={"n_epochs": 4, "learning_rate": 2e-2},
    )


def _distill(
    root: Path, source: Path, data: Path | None = None, **method: Any
) -> tuple[Collect, Path]:
    root.mkdir(parents=True, exist_ok=True)
    data = data or write_sums(root / "sums.jsonl", n=48, seed=3)
    spec = spec_dict(
        data,
        method={"type": "distill", "source": "adapter-test", **method},
        hyperparameters={"n_epochs": 4, "learning_rate": 5e-2},
        source_artifact=str(source),
    )
    reporter = Collect()
    result = train(TrainingSpec.model_validate(spec), root / "out", reporter)
    assert result.artifact_dir is not None
    return reporter, result.artifact_dir


def _kl_from(source: torch.nn.Module, other: torch.nn.Module, batch: dict) -> float:
    """Mean next-token KL(source || other) over the batch's real positions."""
    with torch.no_grad():
        target = F.log_softmax(source(**batch).logits, -1)
        predicted = F.log_softmax(other(**batch).logits, -1)
    real = batch["attention_mask"].bool()
    return float(F.kl_div(predicted[real], target[real], log_target=True, reduction="batchmean"))


def _held_out_batch(root: Path) -> dict[str, torch.Tensor]:
    rows = tokenize_dataset(
        parse_jsonl(write_sums(root / "held_out.jsonl", n=16, seed=11)),
        build_tiny_tokenizer(),
        max_seq_length=64,
    )
    batch = collate(list(rows), rows.pad_token_id)
    return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}


def test_distilling_a_lora_brings_the_student_to_the_source(
    tmp_path: Path, lora_source: Path
) -> None:
    reporter, artifact = _distill(tmp_path, lora_source)
    losses = reporter.losses()
    assert losses[-1] < 0.65 * losses[0], losses
    config = read_artifact_config(artifact)
    assert config.method.type == "post_block"  # an ordinary steering adapter
    assert config.training_manifest["spec"]["method"]["source"] == "adapter-test"

    batch = _held_out_batch(tmp_path)
    source = load_artifact(load_model("tiny-llama"), lora_source).model
    student = load_artifact(load_model("tiny-llama"), artifact).model
    base = load_model("tiny-llama").eval()
    before, after = _kl_from(source, base, batch), _kl_from(source, student, batch)
    assert after < 0.5 * before, (before, after)


def test_the_first_step_scores_the_whole_oracle_shift_as_missed(
    tmp_path: Path, lora_source: Path
) -> None:
    """At step 0 the student's adapter is (nearly) zero: the hidden term is 1, the share of the
    oracle shifts' energy it misses, and with no KL weight the loss is that term alone."""
    reporter, _ = _distill(tmp_path, lora_source, weights={"hidden": 1.0, "kl": 0.0})
    assert reporter.losses()[0] == pytest.approx(1.0, abs=0.02)


def test_the_labels_are_not_used(tmp_path: Path, lora_source: Path) -> None:
    """The same texts split into prompt and completion at another place train the same adapter:
    the targets are the source's, not the file's labels."""
    rng = random.Random(5)
    sums = [(rng.randint(0, 9), rng.randint(0, 9)) for _ in range(24)]
    splits = {
        "answer_only": [{"prompt": f"{a}+{b}=", "completion": str(a + b)} for a, b in sums],
        "whole_equation": [{"prompt": f"{a}", "completion": f"+{b}={a + b}"} for a, b in sums],
    }
    losses = {}
    for name, rows in splits.items():
        data = tmp_path / f"{name}.jsonl"
        data.write_text("".join(json.dumps(row) + "\n" for row in rows))
        reporter, _ = _distill(tmp_path / name, lora_source, data=data)
        losses[name] = reporter.losses()
    assert losses["answer_only"] == losses["whole_equation"]


def test_a_full_fine_tune_distils_too(tmp_path: Path) -> None:
    source = train_tiny_artifact(
        tmp_path / "full", method={"type": "full"}, hyperparameters={"learning_rate": 1e-3}
    )
    reporter, artifact = _distill(tmp_path / "student", source)
    assert reporter.losses()[-1] < reporter.losses()[0]
    assert read_artifact_config(artifact).method.type == "post_block"


def test_without_its_source_distill_is_refused(tmp_path: Path) -> None:
    spec = spec_dict(
        write_sums(tmp_path / "sums.jsonl", n=8),
        method={"type": "distill", "source": "adapter-x"},
    )
    with pytest.raises(ConfigValidationError, match="source_artifact"):
        train(TrainingSpec.model_validate(spec), tmp_path / "out")


@pytest.mark.parametrize(
    ("method", "mentions"),
    [
        ({"type": "distill"}, "source"),
        ({"type": "distill", "source": ""}, "source"),
        ({"type": "distill", "source": "a", "weights": {"hidden": 0, "kl": 0}}, "both 0"),
        (
            {
                "type": "distill",
                "source": "a",
                "trains": {"site": {"layers": "auto", "max_layers": 1}},
            },
            "trains.site.layers",
        ),
    ],
)
def test_bad_distill_configs_name_the_field(method: dict[str, Any], mentions: str) -> None:
    with pytest.raises(ValidationError, match=mentions):
        parse_method(method)


def test_a_cancelled_distillation_resumes_to_the_same_adapter(
    tmp_path: Path, lora_source: Path
) -> None:
    spec = TrainingSpec.model_validate(
        spec_dict(
            write_sums(tmp_path / "sums.jsonl", n=48, seed=3),
            method={"type": "distill", "source": "adapter-test"},
            hyperparameters={"max_steps": 8, "learning_rate": 5e-2},
            source_artifact=str(lora_source),
            checkpoint_every_n_steps=4,
        )
    )
    assert_resumes_to_the_same_adapter(spec, tmp_path)
