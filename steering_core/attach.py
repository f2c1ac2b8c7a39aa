"""The entry point for attaching a method to a loaded Hugging Face causal LM."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError
from torch import nn

from steering_core.config import MethodConfig, parse_method
from steering_core.errors import ConfigValidationError
from steering_core.methods import AttachedMethod, get_method_handler
from steering_core.sites import sites_for_model
from steering_core.steering import find_steering


def as_method_config(config: MethodConfig | dict[str, Any] | str) -> MethodConfig:
    if isinstance(config, dict | str):
        try:
            return parse_method(config)
        except ValidationError as exc:
            raise ConfigValidationError(f"invalid method config: {exc}") from exc
    return config


def attach_method(model: nn.Module, config: MethodConfig | dict[str, Any] | str) -> AttachedMethod:
    """Attach a method (post_block, joint, lora, reft, full) to ``model`` in place.

    The model's architecture must be in the site table; layer indices and ranks are checked
    against it. Only the parameters the method owns require grad afterwards.
    """
    method = as_method_config(config)
    sites_for_model(model)  # unsupported architectures fail here, with the supported list
    if find_steering(model) is not None:
        raise ConfigValidationError("this model already has steering adapters attached")
    return get_method_handler(method.type).attach(model, method)
