"""``reft``, torch side: LoReFT interventions ``h + R^T (W h + b - R h)`` at the site, at the
first and last prompt tokens (pyreft's positions) or at every token."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steering_core.methods.base import (
    AttachedMethod,
    MethodHandler,
    install_site_steering,
    resolve_dtype,
)
from steering_core.methods.reft.config import ReftMethod
from steering_core.methods.steering_tensors import load_steering, save_steering
from steering_core.model.sites import hidden_size_of, unwrap_model
from steering_core.steering.adapter_modules import LoReFTIntervention
from steering_core.steering.positions import prompt_tokens, select_positions
from steering_core.steering.site_steering import find_steering


class ReftAttached(AttachedMethod):
    method_type = "reft"

    def save_payload(self, out_dir: Path) -> list[str]:
        assert self.steering is not None
        return [save_steering(self.steering, out_dir)]


class ReftHandler(MethodHandler):
    method_type = "reft"

    def attach(self, model: nn.Module, config: ReftMethod) -> ReftAttached:
        hidden = hidden_size_of(model)
        dtype = resolve_dtype(config.dtype, model)
        steering = install_site_steering(
            model,
            config.site,
            lambda _layer, device: LoReFTIntervention(
                hidden, config.rank, init=config.init, dtype=dtype, device=device
            ),
            positions=config.first_last,
        )
        return ReftAttached(config, model, steering)

    def load(self, model: nn.Module, config: ReftMethod, artifact_dir: Path) -> ReftAttached:
        attached = self.attach(model, config)
        assert attached.steering is not None
        load_steering(attached.steering, artifact_dir)
        return attached

    def loss(self, forward: Callable[..., Any], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The answer-token loss, with the intervention at the first and last tokens of each
        row's prompt (the tokens before its answer): training rows hold prompt and answer in one
        pass, so the prompt's end comes from the labels, not from the attention mask."""
        steering = find_steering(unwrap_model(getattr(forward, "module", forward)))
        if steering is None or steering.positions is None:
            return super().loss(forward, batch)
        prompt = prompt_tokens(batch["attention_mask"], batch["labels"])
        with steering.intervention_mask(select_positions(prompt, *steering.positions)):
            return super().loss(forward, batch)
