"""Steering in cached generation, and the inference controls (off, strength)."""

from __future__ import annotations

import pytest
import torch

from steering_core.model.loading import build_tiny_model
from steering_core.steering.attach import attach_method
from tests.steering_core.helpers import randomize_adapters, token_batch


def _steered(family: str, kind: str = "nonlinear", site: str = "block_output"):
    model = build_tiny_model(family)
    attached = attach_method(
        model, {"type": "post_block", "site": {"name": site}, "adapter": {"kind": kind}}
    )
    randomize_adapters(attached, scale=0.5)
    return attached


def _greedy(model: torch.nn.Module, ids: torch.Tensor, use_cache: bool) -> torch.Tensor:
    with torch.no_grad():
        return model.generate(
            input_ids=ids,
            attention_mask=torch.ones_like(ids),
            max_new_tokens=12,
            do_sample=False,
            use_cache=use_cache,
            pad_token_id=0,
        )


@pytest.mark.parametrize("family", ["llama", "qwen3", "gemma3_text", "gemma3", "gpt2", "gpt_neox"])
@pytest.mark.parametrize("site", ["block_output", "attn_output"])
def test_cached_generation_equals_uncached_under_steering(family: str, site: str) -> None:
    attached = _steered(family, site=site)
    ids = token_batch(length=6)
    with_cache = _greedy(attached.model, ids, use_cache=True)
    without_cache = _greedy(attached.model, ids, use_cache=False)
    assert torch.equal(with_cache, without_cache)
    base = build_tiny_model(family)
    with torch.no_grad():
        steered_logits = attached.model(input_ids=ids).logits
        base_logits = base(input_ids=ids).logits
    assert not torch.allclose(steered_logits, base_logits), "steering had no effect"


def test_steering_acts_at_every_decode_step() -> None:
    """Count adapter calls: one for prefill and one per decode step, for every steered layer."""
    attached = _steered("llama")
    calls: list[int] = []
    adapter = attached.steering.adapter(0)
    adapter.register_forward_hook(lambda _m, args, _o: calls.append(args[0].shape[1]))
    ids = token_batch(batch=1, length=5)
    out = _greedy(attached.model, ids, use_cache=True)
    new_tokens = out.shape[1] - ids.shape[1]
    assert calls[0] == 5 and calls[1:] == [1] * (new_tokens - 1)


def test_disable_and_strength() -> None:
    attached = _steered("llama")
    base = build_tiny_model("llama")
    ids = token_batch()
    with torch.no_grad():
        base_logits = base(input_ids=ids).logits
        steered = attached.model(input_ids=ids).logits
        with attached.steering_disabled():
            off = attached.model(input_ids=ids).logits
        with attached.steering_scale(0.0):
            zero = attached.model(input_ids=ids).logits
        with attached.steering_scale(2.0):
            double = attached.model(input_ids=ids).logits
        after = attached.model(input_ids=ids).logits
    assert torch.equal(off, base_logits) and torch.equal(zero, base_logits)
    assert not torch.allclose(steered, base_logits)
    assert not torch.allclose(double, steered)
    assert torch.equal(after, steered), "contexts must restore the previous setting"


def test_strength_scales_the_shift_linearly_at_the_site() -> None:
    """At the site itself the shift is exactly scale * f(h) (checked on a one-layer steer)."""
    model = build_tiny_model("llama", dtype=torch.float64)
    attached = attach_method(
        model,
        {"type": "post_block", "site": {"layers": [2]}, "adapter": {"kind": "linear"}},
    )
    randomize_adapters(attached)
    ids = token_batch()
    outputs = {}
    layer = model.model.layers[2]
    handle = layer.register_forward_hook(lambda _m, _a, out: outputs.__setitem__("h", out))
    with torch.no_grad():
        for scale in (0.0, 1.0, 3.0):
            with attached.steering_scale(scale):
                model(input_ids=ids)
            outputs[scale] = outputs["h"]
    handle.remove()
    shift1 = outputs[1.0] - outputs[0.0]
    shift3 = outputs[3.0] - outputs[0.0]
    torch.testing.assert_close(shift3, 3 * shift1, rtol=1e-9, atol=1e-12)
    assert shift1.abs().max() > 0
