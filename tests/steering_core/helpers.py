"""Helpers for steering_core tests: token batches and site captures."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any

import torch

from steering_core.model.sites import decoder_layers, site_module


def token_batch(seed: int = 0, batch: int = 2, length: int = 9, vocab: int = 120) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, vocab, (batch, length), generator=generator)


def first(output: Any) -> torch.Tensor:
    return output[0] if isinstance(output, tuple) else output


@contextmanager
def capture(model: torch.nn.Module, layer: int):
    """Record layer input, layer output and both branch-site outputs of one decoder layer.

    Hooks registered here run after any steering hooks, so they see steered values.
    """
    seen: dict[str, torch.Tensor] = {}
    layer_module = decoder_layers(model)[layer]
    handles = [
        layer_module.register_forward_pre_hook(
            lambda _m, args, kwargs: seen.__setitem__(
                "in", (args[0] if args else kwargs["hidden_states"]).detach().clone()
            ),
            with_kwargs=True,
        ),
        layer_module.register_forward_hook(
            lambda _m, _a, out: seen.__setitem__("out", first(out).detach().clone())
        ),
    ]
    for site in ("attn_output", "mlp_output"):
        handles.append(
            site_module(model, layer, site).register_forward_hook(
                lambda _m, _a, out, site=site: seen.__setitem__(site, first(out).detach().clone())
            )
        )
    try:
        yield seen
    finally:
        for handle in handles:
            handle.remove()


def randomize_adapters(attached: Any, seed: int = 0, scale: float = 0.1) -> None:
    """Give every trainable steering tensor random values (so the adapter is not a no-op)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for param in attached.steering.parameters():
            noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
            param.copy_((noise * scale).to(param.dtype))


def randomize_lora(attached: Any, seed: int, scale: float = 0.2) -> None:
    """LoRA's B is zero at init: give every LoRA tensor random values so it changes the model."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in attached.model.named_parameters():
            if "lora_" in name:
                noise = torch.randn(param.shape, generator=generator, dtype=torch.float32)
                param.copy_((noise * scale).to(param.dtype))
