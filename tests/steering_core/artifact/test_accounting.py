"""Parameter counts against METHOD.md's published numbers (models built on the meta device)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen3Config

from steering_core.artifact.accounting import base_parameter_count, count_parameters
from steering_core.model.loading import build_tiny_model
from steering_core.steering.attach import attach_method

LLAMA_3_2_1B = dict(
    vocab_size=128256,
    hidden_size=2048,
    intermediate_size=8192,
    num_hidden_layers=16,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=64,
    tie_word_embeddings=True,
)
QWEN3_4B = dict(
    vocab_size=151936,
    hidden_size=2560,
    intermediate_size=9728,
    num_hidden_layers=36,
    num_attention_heads=32,
    num_key_value_heads=8,
    head_dim=128,
    tie_word_embeddings=True,
)


def _meta_model(config):
    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(config)


def test_llama_3_2_1b_post_block_count() -> None:
    model = _meta_model(LlamaConfig(**LLAMA_3_2_1B))
    assert base_parameter_count(model) == 1_235_814_400  # the published size
    counts = count_parameters(attach_method(model, {"type": "post_block"}))
    assert counts.trainable == 524_288
    assert round(counts.percent, 3) == 0.042


def test_qwen3_4b_post_block_count() -> None:
    model = _meta_model(Qwen3Config(**QWEN3_4B))
    counts = count_parameters(attach_method(model, {"type": "post_block"}))
    assert counts.trainable == 1_474_560
    assert round(counts.percent, 3) == 0.037


def test_llama_3_2_1b_lora_seven_projections_count() -> None:
    model = _meta_model(LlamaConfig(**LLAMA_3_2_1B))
    counts = count_parameters(attach_method(model, {"type": "lora"}))
    assert counts.trainable == 5_636_096
    assert round(counts.percent, 3) == 0.456


@pytest.mark.parametrize(
    ("method", "expected"),
    [
        ({"type": "post_block", "adapter": {"kind": "vector"}}, 3 * 32),
        ({"type": "post_block", "adapter": {"kind": "linear", "rank": 1}}, 3 * 2 * 32),
        ({"type": "post_block", "site": {"layers": [0, 2]}}, 2 * 2 * 32 * 8),
        ({"type": "reft", "rank": 4}, 3 * (2 * 32 * 4 + 4)),
        # joint = LoRA on the 7 projections + post-block adapters
        ({"type": "joint", "lora": {"rank": 2}}, None),
    ],
)
def test_small_counts(method: dict, expected: int | None) -> None:
    model = build_tiny_model("llama")
    counts = count_parameters(attach_method(model, method))
    if expected is None:
        lora = count_parameters(
            attach_method(build_tiny_model("llama"), {"type": "lora", "lora": {"rank": 2}})
        )
        expected = lora.trainable + 3 * 2 * 32 * 8
    assert counts.trainable == expected
    assert counts.base_total == base_parameter_count(build_tiny_model("llama"))


def test_full_counts_everything() -> None:
    model = build_tiny_model("llama")
    counts = count_parameters(attach_method(model, {"type": "full"}))
    assert counts.trainable == counts.base_total and counts.percent == 100.0
