"""Artifacts of every batched kind on tiny-llama, and the reference each request is held to:
the library's own loaded adapter generating alone with a KV cache, as it always has."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import DynamicCache

from steering_core.artifact.store import load_artifact, save_artifact
from steering_core.model.loading import load_model
from steering_core.model.sites import site_module
from steering_core.steering.attach import attach_method
from tests.steering_core.helpers import randomize_adapters, randomize_lora

MODEL = "tiny-llama"

METHODS: dict[str, dict[str, Any]] = {
    "vector": {"type": "post_block", "adapter": {"kind": "vector"}},
    "linear": {
        "type": "post_block",
        "site": {"name": "mlp_output"},
        "adapter": {"kind": "linear", "rank": 4},
    },
    "nonlinear": {
        "type": "post_block",
        "site": {"name": "attn_output", "layers": [0, 1]},
        "adapter": {"kind": "nonlinear", "rank": 8, "activation": "tanh"},
    },
    "post_block": {"type": "post_block"},
    "reft": {"type": "reft", "rank": 4, "positions": "f2+l2"},
    "lora": {"type": "lora"},
    "joint": {"type": "joint"},
    "full": {"type": "full"},
}


def make_artifacts(root: Path, names: Sequence[str] = tuple(METHODS)) -> dict[str, Path]:
    """One saved artifact per method kind, with random (non-zero) weights."""
    made = {}
    for seed, name in enumerate(names):
        method = METHODS[name]
        attached = attach_method(load_model(MODEL), method)
        if attached.steering is not None:
            randomize_adapters(attached, seed=seed, scale=0.5)
        if method["type"] in ("lora", "joint"):
            randomize_lora(attached, seed + 100)
        if method["type"] == "full":
            with torch.no_grad():
                for param in attached.model.parameters():
                    param.add_(0.01)
        made[name] = root / name
        save_artifact(attached, made[name], base_model_id=MODEL)
    return made


def _add_shifts(shifts: list[tuple[Any, float]]):
    """A hook adding every adapter's shift, each computed on the same (unsteered) input."""

    def hook(_module: Any, _args: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        steered = hidden + sum(strength * adapter(hidden) for adapter, strength in shifts)
        return (steered, *output[1:]) if isinstance(output, tuple) else steered

    return hook


@torch.no_grad()
def reference(
    artifacts: Sequence[tuple[Path, float]],
    prompt: list[int],
    steps: int,
    mode: str | None = None,
) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens and the logits of each step, generating alone with a KV cache.

    One artifact: the library's loaded adapter at ``steering_scale(strength)``. Several
    (all-token steering adapters only): at each site, every adapter's shift of the same input
    is added (the adapters act side by side, not one after another).
    """
    model = load_model(MODEL)
    forward: Any = model
    context: Any = contextlib.nullcontext()
    if len(artifacts) == 1:
        attached = load_artifact(model, artifacts[0][0])
        if mode is not None:  # a joint adapter's half (``lora_only``, ``adapter_only``)
            attached.set_inference_mode(mode)  # type: ignore[arg-type]
        forward, context = attached.model, attached.steering_scale(artifacts[0][1])
    else:
        by_site: dict[tuple[str, int], list[tuple[Any, float]]] = {}
        for path, strength in artifacts:
            steering = load_artifact(load_model(MODEL), path).steering
            assert steering is not None and steering.positions is None
            for layer in steering.layers:
                by_site.setdefault((steering.site, layer), []).append(
                    (steering.adapter(layer), strength)
                )
        for (site, layer), shifts in by_site.items():
            site_module(model, layer, site).register_forward_hook(_add_shifts(shifts))
    cache = DynamicCache()
    tokens: list[int] = []
    logits: list[torch.Tensor] = []
    feed = list(prompt)
    with context:
        for _ in range(steps):
            out = forward(input_ids=torch.tensor([feed]), cache=cache, use_cache=True)
            logits.append(out.logits[0, -1].float())
            tokens.append(int(logits[-1].argmax()))
            feed = [tokens[-1]]
    return tokens, logits


def assert_matches(
    got_logits: Sequence[torch.Tensor], want_logits: Sequence[torch.Tensor], what: str
) -> None:
    """Logits within 1e-4 at every step; the greedy token equal wherever the reference's top-2
    margin exceeds 1e-3 (near-ties may flip between batched and batch-1 matmuls)."""
    assert len(got_logits) == len(want_logits), what
    for step, (got, want) in enumerate(zip(got_logits, want_logits, strict=True)):
        difference = float((got - want).abs().max())
        assert difference < 1e-4, f"{what}: step {step} logits differ by {difference:.2e}"
        top = torch.topk(want, 2).values
        if float(top[0] - top[1]) > 1e-3:
            assert int(got.argmax()) == int(want.argmax()), f"{what}: step {step} token"
