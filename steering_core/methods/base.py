"""The method registry and the object every method returns when attached to a model.

Adding a method is a checklist: a config class in ``steering_core.config`` (added to the
``MethodConfig`` union), a module under ``steering_core/methods/`` that defines a handler and calls
:func:`register_method`, and rows in the method test matrix. Modules in this package are imported
automatically, so nothing else needs to change.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, ClassVar, Protocol

import torch
from torch import nn

from steering_core.artifact_schema import BaseModelInfo
from steering_core.config import DTypeName, InferenceMode, MethodConfig, SiteConfig
from steering_core.errors import ConfigValidationError
from steering_core.sites import decoder_layers, unwrap_model
from steering_core.steering import SiteSteering, model_dtype

_DTYPES = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
    "float64": torch.float64,
}


class AttachedMethod:
    """A method attached to a model: the handle for training, inference and saving.

    ``model`` is what to call ``forward``/``generate`` on (a peft wrapper for LoRA and joint);
    ``base_model`` is the Hugging Face model underneath.
    """

    method_type: ClassVar[str]

    def __init__(
        self, config: MethodConfig, model: nn.Module, steering: SiteSteering | None = None
    ):
        self.config = config
        self.model = model
        self.base_model = unwrap_model(model)
        self.steering = steering
        # Description of the base model, recorded before training when training changes it.
        self.base_info: BaseModelInfo | None = None

    # -- training -------------------------------------------------------------------------
    def trainable_named_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """The parameters this method owns and trains (and only those require grad)."""
        return [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]

    def parameter_groups(
        self,
        learning_rate: float,
        *,
        weight_decay: float = 0.0,
        steering_learning_rate: float | None = None,
    ) -> list[dict[str, Any]]:
        """Optimizer parameter groups. Joint overrides this to give each part its own lr."""
        params = [p for _, p in self.trainable_named_parameters()]
        return [{"params": params, "lr": learning_rate, "weight_decay": weight_decay}]

    def after_optimizer_step(self, step: int) -> dict[str, Any] | None:
        """Called after each optimizer step (1-based); joint projects here."""
        return None

    # -- inference controls ---------------------------------------------------------------
    def set_steering_scale(self, scale: float) -> None:
        if self.steering is not None:
            self.steering.scale = float(scale)

    @contextmanager
    def steering_scale(self, scale: float) -> Iterator[None]:
        if self.steering is None:
            yield
            return
        with self.steering.scaled(scale):
            yield

    @contextmanager
    def steering_disabled(self) -> Iterator[None]:
        if self.steering is None:
            yield
            return
        with self.steering.disabled():
            yield

    def set_inference_mode(self, mode: InferenceMode) -> None:
        if mode != "all":
            raise ConfigValidationError(
                f"inference mode {mode!r} applies to joint adapters only; "
                f"a {self.method_type} adapter supports 'all'"
            )

    @property
    def steered_layers(self) -> list[int]:
        return self.steering.layers if self.steering is not None else []

    # -- artifact ---------------------------------------------------------------------------
    def save_payload(self, out_dir: Path) -> list[str]:
        """Write this method's tensors into ``out_dir``; return the file names written."""
        raise NotImplementedError


class MethodHandler(Protocol):
    method_type: str

    def attach(self, model: nn.Module, config: Any) -> AttachedMethod: ...

    def load(self, model: nn.Module, config: Any, artifact_dir: Path) -> AttachedMethod: ...


_REGISTRY: dict[str, MethodHandler] = {}


def register_method(handler: MethodHandler) -> MethodHandler:
    if handler.method_type in _REGISTRY:
        raise ValueError(f"method {handler.method_type!r} is already registered")
    _REGISTRY[handler.method_type] = handler
    return handler


def get_method_handler(method_type: str) -> MethodHandler:
    try:
        return _REGISTRY[method_type]
    except KeyError:
        raise ConfigValidationError(
            f"unknown method {method_type!r}; available: {', '.join(sorted(_REGISTRY))}"
        ) from None


def registered_methods() -> list[str]:
    return sorted(_REGISTRY)


# -- helpers shared by methods -----------------------------------------------------------------
def resolve_layers(model: nn.Module, site: SiteConfig) -> list[int]:
    """The layer indices to steer, checked against the model's depth."""
    n_layers = len(decoder_layers(model))
    if site.layers is None:
        return list(range(n_layers))
    too_deep = [i for i in site.layers if i >= n_layers]
    if too_deep:
        raise ConfigValidationError(
            f"site.layers {too_deep} out of range: this model has {n_layers} decoder layers "
            f"(valid indices 0..{n_layers - 1})"
        )
    return list(site.layers)


def resolve_dtype(name: DTypeName, model: nn.Module) -> torch.dtype:
    return model_dtype(model) if name == "auto" else _DTYPES[name]


def check_rank(rank: int, hidden_size: int, field: str) -> None:
    if rank > hidden_size:
        raise ConfigValidationError(
            f"{field}={rank} exceeds the model's hidden size {hidden_size}; use 1..{hidden_size}"
        )


def layer_device(model: nn.Module, layer: int) -> torch.device:
    return next(decoder_layers(model)[layer].parameters()).device


def freeze(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(False)


def unfreeze(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(True)


def install_site_steering(
    model: nn.Module, site: SiteConfig, build: Any, *, train_base: bool = False
) -> SiteSteering:
    """Build one adapter per steered layer with ``build(layer, device)``, hook them at the site.

    Unless ``train_base``, the base model is frozen so that only the adapters train.
    """
    layers = resolve_layers(model, site)
    adapters = {layer: build(layer, layer_device(model, layer)) for layer in layers}
    steering = SiteSteering(site.name, adapters)
    if not train_base:
        freeze(unwrap_model(model))
    steering.install(model)
    unfreeze(steering)
    return steering
