"""The batch's shared KV cache on a model with sliding-window layers (Gemma-3's mix of local
and global attention): rows of prompts longer and shorter than the window join and leave while
others decode, and each row's logits stay those it gets alone."""

from __future__ import annotations

import time

import torch
import transformers as tf
from transformers import DynamicCache

from steering_core.model.loading import build_tiny_tokenizer, tiny_config
from steering_core.serving import BatchEngine
from steering_core.serving.requests import GenerationParams
from tests.steering_core.serving_helpers import assert_matches

WINDOW = 4


def _model() -> torch.nn.Module:
    config = tiny_config("gemma3_text")
    config.sliding_window = WINDOW
    config.layer_types = ["sliding_attention", "full_attention", "sliding_attention"]
    config.initializer_range = 0.2  # logits far from uniform: greedy tokens are not near-ties
    torch.manual_seed(0)
    return tf.Gemma3ForCausalLM(config).eval()


@torch.no_grad()
def _alone(model: torch.nn.Module, prompt: list[int], steps: int) -> list[torch.Tensor]:
    cache = DynamicCache(config=model.config)
    logits: list[torch.Tensor] = []
    feed = list(prompt)
    for _ in range(steps):
        out = model(input_ids=torch.tensor([feed]), past_key_values=cache, use_cache=True)
        logits.append(out.logits[0, -1].float())
        feed = [int(logits[-1].argmax())]
    return logits


def _prompt(seed: int, length: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 250, (length,), generator=generator).tolist()


def test_rows_join_and_leave_a_cache_with_sliding_window_layers() -> None:
    model = _model()
    windows = [
        getattr(layer, "sliding_window", None) for layer in DynamicCache(config=model.config).layers
    ]
    assert windows == [WINDOW, None, WINDOW]
    engine = BatchEngine(model, build_tiny_tokenizer(), max_batch=8)
    try:
        prompts = {"long": _prompt(1, 11), "short": _prompt(2, 2), "mid": _prompt(3, 6)}
        steps = {"long": 14, "short": 5, "mid": 9}
        handles = {}
        handles["long"] = engine.submit(
            prompts["long"],
            GenerationParams(max_tokens=steps["long"], temperature=0),
            keep_logits=True,
        )
        deadline = time.monotonic() + 60
        while len(handles["long"].logits or []) < 6 and time.monotonic() < deadline:
            time.sleep(0.001)
        for name in ("short", "mid"):  # join a row already past the window
            handles[name] = engine.submit(
                prompts[name],
                GenerationParams(max_tokens=steps[name], temperature=0),
                keep_logits=True,
            )
        for handle in handles.values():
            handle.future.result(timeout=60)
        assert engine.peak_rows == 3
        for name, handle in handles.items():
            got = handle.logits or []
            assert len(got) == steps[name], name
            assert_matches(got, _alone(model, prompts[name], steps[name]), name)
    finally:
        engine.close()
