"""``post_block``, torch side: steering adapters hooked at a site of each layer."""

from __future__ import annotations

from pathlib import Path

from torch import nn

from steering_core.methods.base import (
    AttachedMethod,
    MethodHandler,
    install_site_steering,
    resolve_dtype,
)
from steering_core.methods.post_block.config import PostBlockMethod
from steering_core.methods.steering_tensors import load_steering, save_steering
from steering_core.model.sites import hidden_size_of
from steering_core.spec.method_config import AdapterConfig, SiteConfig
from steering_core.steering.adapter_modules import build_steering_adapter
from steering_core.steering.site_steering import SiteSteering


def install_adapters(model: nn.Module, site: SiteConfig, adapter: AdapterConfig) -> SiteSteering:
    """Hook fresh adapters at the site (sizes were checked against the model on attach)."""
    hidden = hidden_size_of(model)
    dtype = resolve_dtype(adapter.dtype, model)
    return install_site_steering(
        model,
        site,
        lambda _layer, device: build_steering_adapter(adapter, hidden, dtype=dtype, device=device),
    )


class PostBlockAttached(AttachedMethod):
    method_type = "post_block"

    def save_payload(self, out_dir: Path) -> list[str]:
        assert self.steering is not None
        return [save_steering(self.steering, out_dir)]


class PostBlockHandler(MethodHandler):
    method_type = "post_block"

    def attach(self, model: nn.Module, config: PostBlockMethod) -> PostBlockAttached:
        steering = install_adapters(model, config.site, config.adapter)
        return PostBlockAttached(config, model, steering)

    def load(
        self, model: nn.Module, config: PostBlockMethod, artifact_dir: Path
    ) -> PostBlockAttached:
        attached = self.attach(model, config)
        assert attached.steering is not None
        load_steering(attached.steering, artifact_dir)
        return attached
