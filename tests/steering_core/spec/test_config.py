"""Method configs: defaults, discriminated union, bounds, and a torch-free import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from steering_core.methods.joint import JointMethod
from steering_core.methods.post_block import PostBlockMethod
from steering_core.methods.reft import ReftMethod
from steering_core.methods.registry import parse_method

ROOT = Path(__file__).resolve().parents[3]


def test_type_alone_is_a_valid_method() -> None:
    method = parse_method({"type": "post_block"})
    assert isinstance(method, PostBlockMethod)
    assert method.site.name == "block_output" and method.site.layers is None
    assert (method.adapter.kind, method.adapter.rank, method.adapter.activation) == (
        "nonlinear",
        8,
        "silu",
    )
    joint = parse_method('{"type": "joint"}')
    assert isinstance(joint, JointMethod)
    assert (joint.lora.rank, joint.lora.alpha, joint.lora.dropout) == (8, 8.0, 0.0)
    assert joint.orthogonality.every_n_steps == 100 and joint.orthogonality.side == "input"
    reft = parse_method({"type": "reft"})
    assert isinstance(reft, ReftMethod) and reft.site.name == "block_output"  # as pyreft
    assert reft.positions == "f7+l7" and reft.first_last == (7, 7)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"type": "reinforcement"}, "method"),
        ({"type": "post_block", "adapter": {"rank": 0}}, "rank"),
        ({"type": "post_block", "adapter": {"rank": 100000}}, "rank"),
        ({"type": "post_block", "adapter": {"activation": "softplus"}}, "activation"),
        ({"type": "post_block", "site": {"name": "embeddings"}}, "site.name"),
        ({"type": "post_block", "site": {"layers": [-1]}}, "layers"),
        ({"type": "post_block", "site": {"layers": [1, 1]}}, "layers"),
        ({"type": "post_block", "site": {"layers": []}}, "layers"),
        ({"type": "post_block", "unknown": 1}, "unknown"),
        ({"type": "joint", "orthogonality": {"every_n_steps": 0}}, "every_n_steps"),
        ({"type": "joint", "lora": {"dropout": 1.0}}, "dropout"),
    ],
)
def test_invalid_configs_name_the_field(data: dict, field: str) -> None:
    with pytest.raises(ValidationError) as info:
        parse_method(data)
    assert field.split(".")[-1] in str(info.value)


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"type": "post_block", "adapter": {"rank": True}}, "rank"),
        ({"type": "post_block", "adapter": {"init_scale": True}}, "init_scale"),
        ({"type": "post_block", "site": {"layers": [0, True]}}, "layers"),
        ({"type": "joint", "lora": {"alpha": False}}, "alpha"),
        ({"type": "joint", "orthogonality": {"every_n_steps": True}}, "every_n_steps"),
    ],
)
def test_booleans_are_not_numbers(data: dict, field: str) -> None:
    """Pydantic's lax mode reads true/false as 1/0; configs refuse them where a number goes."""
    with pytest.raises(ValidationError) as info:
        parse_method(data)
    assert f"{field}: expected a number" in str(info.value)


def test_booleans_and_numbers_where_they_belong_still_validate(tmp_path: Path) -> None:
    from steering_core.spec.compute import DeepSpeedSpec
    from steering_core.spec.training_spec import Hyperparameters, TrainingSpec

    assert Hyperparameters(group_by_length=True, n_epochs=2, learning_rate=1).learning_rate == 1.0
    assert DeepSpeedSpec(zero_stage=2, offload_optimizer=True).zero_stage == 2
    with pytest.raises(ValidationError, match="zero_stage: expected a number, got true"):
        DeepSpeedSpec(zero_stage=True)
    spec = TrainingSpec(
        model="tiny-llama",
        method=parse_method({"type": "joint", "site": {"layers": [0, 1]}}),
        hyperparameters=Hyperparameters(n_epochs=2, batch_size="auto", group_by_length=True),
        keep_best_validation=True,
    )
    path = tmp_path / "spec.json"
    path.write_text(spec.model_dump_json())
    assert TrainingSpec.model_validate_json(path.read_text()) == spec


def test_text_that_is_not_unicode_is_refused() -> None:
    with pytest.raises(ValidationError, match="lone surrogate"):
        parse_method({"type": "lora", "lora": {"target_modules": ["q_proj", "\ud800"]}})


def test_layers_beyond_the_model_are_refused_at_attach() -> None:
    from steering_core.errors import ConfigValidationError
    from steering_core.model.loading import build_tiny_model
    from steering_core.steering.attach import attach_method

    with pytest.raises(ConfigValidationError, match=r"\[3, 7\] out of range.*3 decoder layers"):
        attach_method(
            build_tiny_model("llama"), {"type": "post_block", "site": {"layers": [0, 3, 7]}}
        )
    with pytest.raises(ConfigValidationError, match="exceeds the model's hidden size 32"):
        attach_method(build_tiny_model("llama"), {"type": "post_block", "adapter": {"rank": 64}})
    with pytest.raises(ConfigValidationError, match="invalid method config"):
        attach_method(build_tiny_model("llama"), {"type": "post_block", "adapter": {"rank": -1}})


def test_unknown_architecture_lists_the_supported_ones() -> None:
    from transformers import BertConfig, BertLMHeadModel

    from steering_core.errors import UnsupportedArchitectureError
    from steering_core.steering.attach import attach_method

    model = BertLMHeadModel(
        BertConfig(
            vocab_size=50,
            hidden_size=16,
            num_hidden_layers=1,
            num_attention_heads=2,
            intermediate_size=32,
            is_decoder=True,
        )
    )
    with pytest.raises(UnsupportedArchitectureError) as info:
        attach_method(model, {"type": "post_block"})
    message = str(info.value)
    assert "'bert' is not supported" in message
    for name in ("llama", "gemma3", "gemma3_text", "gpt2", "gpt_neox", "qwen3", "mistral"):
        assert name in message


def test_config_and_spec_import_without_torch() -> None:
    code = (
        "import sys\n"
        "import steering_core.spec.method_config, steering_core.spec.training_spec\n"
        "import steering_core.artifact.schema\n"
        "import steering_core.errors, steering_core.model.sites\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "print(','.join(heavy))\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, f"imported: {result.stdout} {result.stderr}"


def test_hyperparameters_resolve_to_method_defaults() -> None:
    from steering_core.spec.training_spec import (
        Hyperparameters,
        TrainingSpec,
        resolve_hyperparameters,
    )

    spec = TrainingSpec.model_validate({"model": "tiny-llama", "method": {"type": "joint"}})
    resolved = resolve_hyperparameters(spec.method.type, spec.hyperparameters, n_examples=1000)
    assert (resolved.learning_rate, resolved.lr_scheduler, resolved.warmup_ratio) == (
        2e-4,
        "cosine",
        0.06,
    )
    steering = resolve_hyperparameters(
        "post_block", Hyperparameters(learning_rate_multiplier=2.0), n_examples=1000
    )
    assert steering.learning_rate == 2 * 9e-4 and steering.lr_scheduler == "linear"
    assert (steering.batch_size, steering.gradient_accumulation_steps) == (8, 2)
    assert spec.seed == 42
    with pytest.raises(ValidationError, match="learning_rate"):
        Hyperparameters(learning_rate=-1.0)


@pytest.mark.parametrize(
    ("n_examples", "world_size", "n_epochs", "batch_size"),
    [
        (1, 1, 25, 1),  # 100 examples seen would take 100 epochs: at most 25; one row a batch
        (5, 2, 20, 6),  # 100 seen; the batch is the 5 rows, rounded up to split across 2 ranks
        (16, 1, 7, 8),  # ceil(100 / 16) epochs
        (34, 1, 3, 8),  # 102 seen in 3 epochs
        (4_000, 1, 3, 8),  # 0.2% = 8
        (6_000, 3, 3, 18),  # 0.2% = 12, nearest power of two 16, a multiple of 3 ranks
        (10_000, 1, 2, 16),  # 25,000 seen at most: 2 epochs
        (40_000, 1, 1, 64),  # 0.2% = 80: at most 64; never under 1 epoch
    ],
)
def test_auto_epochs_and_batch_size_follow_the_number_of_examples(
    n_examples: int, world_size: int, n_epochs: int, batch_size: int
) -> None:
    from steering_core.spec.training_spec import Hyperparameters, resolve_hyperparameters

    resolved = resolve_hyperparameters(
        "post_block", Hyperparameters(), n_examples=n_examples, world_size=world_size
    )
    assert (resolved.n_epochs, resolved.batch_size) == (n_epochs, batch_size)
    given = Hyperparameters(n_epochs=2, batch_size=4)
    explicit = resolve_hyperparameters("post_block", given, n_examples=n_examples)
    assert (explicit.n_epochs, explicit.batch_size) == (2, 4)


def test_a_jobs_validation_settings_win_over_the_specs() -> None:
    from steering_core.spec.training_spec import TrainingSpec, ValidationPlan

    spec = {"model": "tiny-llama", "eval_every_n_steps": 5, "eval_each_epoch": True}
    assert TrainingSpec.model_validate(spec).validation_plan() == ValidationPlan(
        5, True, None, False
    )
    job = {"eval_every_n_steps": 3, "early_stopping_patience": 2, "keep_best_validation": True}
    plan = TrainingSpec.model_validate({**spec, "hyperparameters": job}).validation_plan()
    assert plan == ValidationPlan(3, True, 2, True)


def test_catalogue_dimensions_match_the_models() -> None:
    from steering_core.model.catalogue import TINY_DIMENSIONS, TINY_FAMILIES, model_dimensions
    from steering_core.model.loading import tiny_config

    for family in TINY_FAMILIES:
        config = tiny_config(family)
        text = getattr(config, "text_config", None) or config
        layers = getattr(text, "num_hidden_layers", None) or text.n_layer
        hidden = getattr(text, "hidden_size", None) or text.n_embd
        assert (layers, hidden) == TINY_DIMENSIONS == model_dimensions(f"tiny-{family}")


def test_api_side_modules_import_without_torch() -> None:
    code = (
        "import sys\nimport steering_core.model.catalogue, steering_core.data.formats\n"
        "import steering_core.engine.events, steering_core.exit_codes\n"
        "heavy = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "sys.exit(1 if heavy else 0)\n"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
