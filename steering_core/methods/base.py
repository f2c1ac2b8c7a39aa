"""The torch side of a method: the handler that attaches, loads, tokenizes and scores, and the
object a method returns when attached to a model.

A method's torch-free :class:`~steering_core.methods.definition.MethodDefinition` names its
handler (``handler="module:Class"``); :func:`get_method_handler` imports it on first use. A
handler subclasses :class:`MethodHandler` and overrides ``attach`` and ``load``; the data side
(``tokenize``, ``collate``) and the ``loss`` default to answer-only next-token training on the
supervised formats, and a method with its own data format or objective overrides them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from steering_core.artifact.schema import BaseModelInfo
from steering_core.data.batches import IGNORE_INDEX, collate, tokenize_dataset
from steering_core.data.formats import ParsedDataset
from steering_core.errors import ConfigValidationError
from steering_core.methods.loss import causal_lm_loss
from steering_core.methods.registry import MethodConfig, method_definition
from steering_core.model.sites import decoder_layers, unwrap_model
from steering_core.spec.method_config import DTypeName, InferenceMode, SiteConfig
from steering_core.steering.site_steering import SiteSteering, model_dtype

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

    @contextmanager
    def trained_parts_disabled(self) -> Iterator[None]:
        """The model as it was before training: every part this method trains switched off
        (the reference policy of preference training); the steering adapters by default."""
        if self.steering is None:
            raise ConfigValidationError(
                f"a {self.method_type} model has no trained part to switch off"
            )
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


LossFunction = Callable[[Callable[..., Any], Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class LossContext:
    """What a method's training loss may need besides the batch: the method's config, the
    resolved hyperparameters, a loader of a fresh, frozen copy of the base model on the
    training device, and (a spec naming a ``source_artifact``) one of the base with that
    artifact loaded."""

    method: Any
    hyperparameters: Any
    load_base_model: Callable[[], nn.Module]
    load_source_model: Callable[[], nn.Module] | None = None


class MethodHandler:
    """Attach / load a method on a model, and turn its training data into a loss.

    ``tokenize`` turns parsed records into rows, ``collate`` rows into a batch of tensors, and
    ``loss`` a batch into the scalar to minimise through ``forward`` (the model, or a DeepSpeed
    engine wrapping it); validation uses the same ``loss``.
    """

    method_type: ClassVar[str]

    def attach(self, model: nn.Module, config: Any) -> AttachedMethod:
        raise NotImplementedError

    def load(self, model: nn.Module, config: Any, artifact_dir: Path) -> AttachedMethod:
        raise NotImplementedError

    def tokenize(self, dataset: ParsedDataset, tokenizer: Any, max_seq_length: int) -> Any:
        return tokenize_dataset(dataset, tokenizer, max_seq_length=max_seq_length)

    def collate(self, rows: Sequence[Any], pad_id: int) -> dict[str, torch.Tensor]:
        return collate(rows, pad_id)

    def loss(self, forward: Callable[..., Any], batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        return causal_lm_loss(forward, batch)

    def training_loss(self, attached: AttachedMethod, context: LossContext) -> LossFunction:
        """The loss training and validation minimise once ``attached`` is on the model: ``loss``
        itself, unless the objective needs the attached method (preference training's reference
        is the model with its trained parts switched off)."""
        return self.loss

    def completion_records(self, records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Validation records as prompt and expected completion, for the strength report
        (supervised formats already are)."""
        return records

    @staticmethod
    def supervised_tokens(batch: Mapping[str, torch.Tensor]) -> int:
        """How many tokens of ``batch`` the loss averages over (to weight validation means)."""
        return int((batch["labels"][:, 1:] != IGNORE_INDEX).sum())


@functools.cache
def get_method_handler(method_type: str) -> MethodHandler:
    """The torch-side handler of a registered method (imported on first use)."""
    handler = method_definition(method_type).load_handler()
    if not isinstance(handler, MethodHandler):
        raise ConfigValidationError(
            f"method {method_type!r}: its handler is a {type(handler).__name__}, "
            "not a MethodHandler"
        )
    return handler


# -- helpers shared by methods -----------------------------------------------------------------
def resolve_layers(model: nn.Module, site: SiteConfig) -> list[int]:
    """The layer indices to steer (their range was checked by ``check_sizes`` on attach)."""
    if site.layers == "auto":  # chosen on training data: the engine resolves it before attaching
        raise ConfigValidationError(
            'site.layers "auto" is resolved by training (steering_core.engine.layer_selection); '
            "attach a config that lists the layers"
        )
    if site.layers is None:
        return list(range(len(decoder_layers(model))))
    return list(site.layers)


def resolve_dtype(name: DTypeName, model: nn.Module) -> torch.dtype:
    return model_dtype(model) if name == "auto" else _DTYPES[name]


def layer_device(model: nn.Module, layer: int) -> torch.device:
    return next(decoder_layers(model)[layer].parameters()).device


def freeze(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(False)


def unfreeze(module: nn.Module) -> None:
    for param in module.parameters():
        param.requires_grad_(True)


def install_site_steering(
    model: nn.Module,
    site: SiteConfig,
    build: Any,
    *,
    train_base: bool = False,
    positions: tuple[int, int] | None = None,
) -> SiteSteering:
    """Build one adapter per steered layer with ``build(layer, device)``, hook them at the site.

    Unless ``train_base``, the base model is frozen so that only the adapters train.
    ``positions=(first, last)`` limits steering to those prompt tokens (see ``SiteSteering``).
    """
    layers = resolve_layers(model, site)
    adapters = {layer: build(layer, layer_device(model, layer)) for layer in layers}
    steering = SiteSteering(site.name, adapters, positions=positions)
    if not train_base:
        freeze(unwrap_model(model))
    steering.install(model)
    unfreeze(steering)
    return steering
