"""``reft``, torch side: LoReFT interventions ``h + R^T (W h + b - R h)`` at the site."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from steering_core.adapters import LoReFTIntervention
from steering_core.methods.base import (
    AttachedMethod,
    MethodHandler,
    install_site_steering,
    resolve_dtype,
)
from steering_core.methods.payload import load_steering, save_steering
from steering_core.methods.reft.config import ReftMethod
from steering_core.sites import hidden_size_of


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
        )
        return ReftAttached(config, model, steering)

    def load(self, model: nn.Module, config: ReftMethod, artifact_dir: Path) -> ReftAttached:
        attached = self.attach(model, config)
        assert attached.steering is not None
        load_steering(attached.steering, artifact_dir)
        return attached
