"""Applying adapters at a site with forward hooks, in training and in cached generation.

A :class:`SiteSteering` owns one adapter per steered layer and registers a forward hook on each
layer's site module (see ``steering_core.model.sites``). A hook runs on every forward pass of that
module, so steering acts on every token position in training, in prefill and at every decode step
of ``generate`` with a KV cache. Decoder layers return a tensor (transformers 5) or a tuple
``(hidden, ...)``; attention modules return tuples: the hook edits the first element and returns
what it received in the same shape.

The adapters are registered as the ``steering`` submodule of the Hugging Face model, so they move
with ``.to()``, appear in ``parameters()`` (DeepSpeed and optimizers see them) and ZeRO-3 gathers
them when they are called.

With ``positions=(first, last)`` the shift applies only at the first and last prompt tokens of
each row (pyreft's LoReFT): a forward pre-hook on the model marks those positions before each
pass: in a pass that starts fresh (training, prefill) the prompt is the row's attended tokens,
and a pass that continues a KV cache (a decode step) is generated text and gets none. Training
knows better where the prompt ends (before the first supervised label), and a caller that feeds
a prompt in pieces knows which piece holds what: both set the mask themselves
(:meth:`SiteSteering.intervention_mask`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from steering_core.model.sites import site_module, unwrap_model
from steering_core.steering.adapter_modules import SteeringAdapter
from steering_core.steering.positions import select_positions

STEERING_ATTRIBUTE = "steering"


class SiteSteering(nn.Module):
    """Adapters at one site over a set of layers, with a global scale and an on/off switch."""

    def __init__(
        self,
        site: str,
        adapters: dict[int, SteeringAdapter],
        positions: tuple[int, int] | None = None,
    ):
        super().__init__()
        self.site = site
        self.adapters = nn.ModuleDict({str(i): adapters[i] for i in sorted(adapters)})
        self.scale: float = 1.0
        # called as probe(layer, hidden, shift) on every hooked forward when set (statistics)
        self.probe: Any = None
        self.enabled: bool = True
        # (first, last) prompt tokens to steer; None: every position
        self.positions = positions
        self._mask: torch.Tensor | None = None  # this forward's positions (batch x seq, bool)
        self._mask_override: torch.Tensor | None = None
        self._handles: list[RemovableHandle] = []

    @property
    def layers(self) -> list[int]:
        return sorted(int(k) for k in self.adapters)

    def adapter(self, layer: int) -> SteeringAdapter:
        return self.adapters[str(layer)]  # type: ignore[return-value]

    def install(self, model: nn.Module) -> None:
        """Register on ``model`` (its unwrapped HF model) and hook every steered site."""
        base = unwrap_model(model)
        if hasattr(base, STEERING_ATTRIBUTE):
            raise RuntimeError("this model already carries steering adapters; detach them first")
        base.add_module(STEERING_ATTRIBUTE, self)
        if self.positions is not None:
            self._handles.append(
                base.register_forward_pre_hook(self._mark_positions, with_kwargs=True)
            )
        for layer in self.layers:
            target = site_module(base, layer, self.site)
            self._handles.append(target.register_forward_hook(self._make_hook(layer)))

    def remove(self) -> None:
        """Remove the hooks and unregister from the model it was installed on."""
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def _mark_positions(self, _module: nn.Module, args: Any, kwargs: dict[str, Any]) -> None:
        """Before each forward of the model: the positions this pass steers."""
        if self._mask_override is not None:
            self._mask = self._mask_override
            return
        tokens = kwargs.get("input_ids", args[0] if args else None)
        if tokens is None:
            tokens = kwargs["inputs_embeds"][..., 0]
        # transformers 5 names the KV cache ``cache`` (``past_key_values`` before)
        cache = kwargs.get("cache", kwargs.get("past_key_values"))
        if cache is not None and cache.get_seq_length() > 0:  # a decode step: generated text
            self._mask = torch.zeros(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
            return
        attention = kwargs.get("attention_mask")
        prompt = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
        if attention is not None:
            prompt = attention[:, -tokens.shape[1] :].bool()
        assert self.positions is not None
        self._mask = select_positions(prompt, *self.positions)

    @contextmanager
    def intervention_mask(self, mask: torch.Tensor) -> Iterator[None]:
        """Steer exactly at ``mask`` (bool, batch x seq of the passes inside) for position-limited
        steering; a no-op for steering at every position."""
        if self.positions is None:
            yield
            return
        previous = self._mask_override
        self._mask_override = mask.bool()
        try:
            yield
        finally:
            self._mask_override = previous

    def _make_hook(self, layer: int):
        adapter = self.adapters[str(layer)]

        def hook(_module: nn.Module, _args: Any, output: Any) -> Any:
            if not self.enabled or self.scale == 0.0:
                return None
            hidden = output[0] if isinstance(output, tuple) else output
            shift = adapter(hidden)
            if self.positions is not None and self._mask is not None:
                shift = shift * self._mask.to(shift.device).unsqueeze(-1).to(shift.dtype)
            if self.probe is not None:
                self.probe(layer, hidden, shift)
            if self.scale != 1.0:
                shift = shift * self.scale
            steered = hidden + shift
            if isinstance(output, tuple):
                return (steered, *output[1:])
            return steered

        return hook

    @contextmanager
    def disabled(self) -> Iterator[None]:
        previous = self.enabled
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = previous

    @contextmanager
    def scaled(self, scale: float) -> Iterator[None]:
        previous = self.scale
        self.scale = float(scale)
        try:
            yield
        finally:
            self.scale = previous


def find_steering(model: nn.Module) -> SiteSteering | None:
    found = getattr(unwrap_model(model), STEERING_ATTRIBUTE, None)
    return found if isinstance(found, SiteSteering) else None


def detach_steering(model: nn.Module) -> None:
    """Remove steering hooks and the ``steering`` submodule; the model is the base model again."""
    base = unwrap_model(model)
    steering = find_steering(base)
    if steering is None:
        return
    steering.remove()
    delattr(base, STEERING_ATTRIBUTE)


def model_dtype(model: nn.Module) -> torch.dtype:
    return unwrap_model(model).get_input_embeddings().weight.dtype
