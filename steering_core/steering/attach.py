"""The entry point for attaching a method to a loaded Hugging Face causal LM."""

from __future__ import annotations

from typing import Any

from torch import nn

from steering_core.errors import ConfigValidationError
from steering_core.methods.base import AttachedMethod, get_method_handler
from steering_core.methods.registry import as_method_config, method_definition
from steering_core.model.sites import decoder_layers, hidden_size_of, sites_for_model
from steering_core.steering.site_steering import find_steering


def check_method_fits(model: nn.Module, method: Any) -> None:
    """Layer indices within the model's depth, ranks within its hidden size (the method's own
    :meth:`~steering_core.methods.definition.MethodDefinition.check_sizes`, as the API runs it
    before storing a job)."""
    definition = method_definition(method.type)
    definition.check_sizes(method, len(decoder_layers(model)), hidden_size_of(model))


def attach_method(model: nn.Module, config: Any) -> AttachedMethod:
    """Attach a registered method (a config object, dict or JSON string) to ``model`` in place.

    The model's architecture must be in the site table; layer indices and ranks are checked
    against it. Only the parameters the method owns require grad afterwards.
    """
    method = as_method_config(config)
    sites_for_model(model)  # unsupported architectures fail here, with the supported list
    if find_steering(model) is not None:
        raise ConfigValidationError("this model already has steering adapters attached")
    check_method_fits(model, method)
    return get_method_handler(method.type).attach(model, method)


__all__ = ["as_method_config", "attach_method", "check_method_fits"]
