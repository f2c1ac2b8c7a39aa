"""What a method is, without torch: its name, config model, defaults, data formats, size checks.

Every method lives in its own folder under ``steering_core/methods/`` (or in another installed
package) and exposes one :class:`MethodDefinition` through the ``steering_service.methods`` entry
point group (see :mod:`steering_core.methods.registry`). The definition is torch-free, so the API
image and the ``steer`` CLI (neither has torch) validate jobs and list methods from it; the torch
side (attach, load, tokenize, loss) is the :class:`~steering_core.methods.base.MethodHandler`
named by ``handler`` and imported only where training or generation runs.

Adding a method:

1. a folder (or package) with ``config.py`` (a :class:`StrictModel` with ``type: Literal[name]``),
   ``__init__.py`` defining ``METHOD = MethodDefinition(...)`` and ``handler.py`` (torch);
2. one entry point line in its ``pyproject.toml``::

       [project.entry-points."steering_service.methods"]
       my_method = "my_package.my_method:METHOD"

3. rows in the method test matrix (``tests/steering_core/methods/test_methods_training.py``).

The API schema, the job translation, the CLI's ``--method`` choices and the dashboard's list
all derive from the registered definitions.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any, Literal

from steering_core.data.formats import DATA_FORMATS
from steering_core.errors import ConfigValidationError
from steering_core.spec.compute import ALL_STAGES
from steering_core.spec.layer_budget import BudgetError, is_auto, layer_budget
from steering_core.spec.method_config import AdapterConfig, SiteConfig, StrictModel

Scheduler = Literal["linear", "cosine", "constant"]

# The supervised formats (chat, prompt/completion, Alpaca): answer-only next-token loss.
SUPERVISED_FORMATS: tuple[str, ...] = tuple(DATA_FORMATS)


class MethodDefaults(StrictModel):
    """The hyperparameters a method trains with when a job leaves them out (or ``"auto"``)."""

    learning_rate: float
    lr_scheduler: Scheduler
    warmup_ratio: float


@dataclass(frozen=True)
class AdapterSummary:
    """How ``steering_config.json`` describes the trained adapter (all None: no steering)."""

    adapter_kind: str | None = None
    rank: int | None = None
    activation: str | None = None


def field_value(config: StrictModel, path: str) -> Any:
    """The value at a dotted ``path`` (``"adapter.rank"``) of a config, None where absent."""
    value: Any = config
    for part in path.split("."):
        value = getattr(value, part, None)
    return value


@dataclass(frozen=True)
class MethodDefinition:
    """Everything about a method that the service needs without torch.

    ``rank_fields`` are the dotted paths of the config's ranks (checked against the model's
    hidden size; the first is the one ``steer jobs create --rank`` sets); ``site_field`` names
    the :class:`SiteConfig` whose ``layers`` are checked against the model's depth.
    ``trains_base_weights``: the method changes the base model itself (full fine-tuning): the
    base loads in fp32 and checkpoints hold no separate adapter artifact.
    ``handler``: ``"module:attribute"`` of the torch-side :class:`MethodHandler`.
    ``hyperparameters``: the method-specific hyperparameters it takes (``beta`` for dpo); a
    job giving one to another method is refused (``steering_core.spec.training_spec``).
    """

    name: str
    config: type[StrictModel]
    defaults: MethodDefaults
    description: str
    handler: str
    data_formats: tuple[str, ...] = SUPERVISED_FORMATS
    rank_fields: tuple[str, ...] = ()
    site_field: str | None = None
    trains_base_weights: bool = False
    summary: Any = field(default=None, compare=False)  # (config) -> AdapterSummary
    training_checks: tuple[Any, ...] = field(default=(), compare=False)  # (config, spec) -> None
    # (config) -> (the ZeRO stages it trains under, why not the others); None: every stage
    zero_stages: Any = field(default=None, compare=False)
    hyperparameters: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        declared = self.config.model_fields.get("type")
        if declared is None or declared.default != self.name:
            raise ValueError(
                f"method {self.name!r}: its config {self.config.__name__} must have "
                f"type: Literal[{self.name!r}] = {self.name!r}"
            )

    # -- sizes ------------------------------------------------------------------------------
    def ranks(self, config: StrictModel) -> dict[str, int]:
        """The config's ranks by dotted field path (only those that apply to this config)."""
        ranks = {path: field_value(config, path) for path in self.rank_fields}
        for path in list(ranks):  # a vector adapter has no rank
            if path.endswith("adapter.rank"):
                adapter = field_value(config, path.removesuffix(".rank"))
                if getattr(adapter, "kind", None) == "vector":
                    ranks.pop(path)
        return {path: rank for path, rank in ranks.items() if isinstance(rank, int)}

    def site(self, config: StrictModel) -> SiteConfig | None:
        return None if self.site_field is None else field_value(config, self.site_field)

    def check_sizes(
        self, config: StrictModel, n_layers: int, hidden_size: int, model: str | None = None
    ) -> None:
        """Layer indices within the model's depth and ranks within its hidden size; else a
        :class:`MethodSizeError` naming the field and the accepted range (and ``model``, the
        model's name, when given)."""
        site = self.site(config)
        if is_auto(site):
            try:
                layer_budget(
                    site,
                    getattr(config, "adapter", AdapterConfig()),
                    n_layers,
                    hidden_size,
                    prefix=str(self.site_field),
                    model=model,
                )
            except BudgetError as exc:
                raise MethodSizeError(exc.field, str(exc)) from exc
        layers = site.layers if site is not None and isinstance(site.layers, list) else []
        too_deep = [i for i in layers if i >= n_layers]
        if too_deep:
            field = f"{self.site_field}.layers"
            raise MethodSizeError(
                field,
                f"{field} {too_deep} out of range: {model or 'this model'} has {n_layers} "
                f"decoder layers (valid indices 0..{n_layers - 1})",
            )
        for path, rank in self.ranks(config).items():
            if rank > hidden_size:
                raise MethodSizeError(
                    path,
                    f"{path}={rank} exceeds {model or 'the model'}'s hidden size {hidden_size}; "
                    f"use 1..{hidden_size}",
                )

    # -- data, artifact, training ------------------------------------------------------------
    def check_data_format(self, data_format: str | None, what: str = "the training file") -> None:
        if data_format is not None and data_format not in self.data_formats:
            raise ConfigValidationError(
                f"{what} is in the {data_format!r} format, which the {self.name} method does "
                f"not train on; it accepts {', '.join(self.data_formats)}"
            )

    def adapter_summary(self, config: StrictModel) -> AdapterSummary:
        return self.summary(config) if self.summary is not None else AdapterSummary()

    def check_training(self, config: StrictModel, spec: Any) -> None:
        """Refuse a spec this method cannot train (raise a user error that says why)."""
        for check in self.training_checks:
            check(config, spec)

    def allowed_zero_stages(self, config: StrictModel) -> tuple[int, ...]:
        return ALL_STAGES if self.zero_stages is None else self.zero_stages(config)[0]

    def check_zero_stage(self, config: StrictModel, stage: int) -> None:
        """Refuse a ZeRO stage this method (with this config) cannot train under."""
        if self.zero_stages is None:
            return
        allowed, reason = self.zero_stages(config)
        if stage not in allowed:
            stages = ", ".join(str(s) for s in allowed)
            raise ConfigValidationError(
                f"the {self.name} method cannot train under zero_stage {stage}: {reason}; "
                f'use zero_stage {stages} or "auto"'
            )

    def load_handler(self) -> Any:
        """Import the torch side, a :class:`~steering_core.methods.base.MethodHandler` (only
        where training or generation runs: this module never imports it)."""
        module_name, _, attribute = self.handler.partition(":")
        handler = getattr(importlib.import_module(module_name), attribute)
        return handler() if isinstance(handler, type) else handler


class MethodSizeError(ConfigValidationError):
    """A layer index or rank that does not fit the model; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


def steering_adapter_summary(config: Any) -> AdapterSummary:
    """Summary of a method whose ``adapter`` is an
    :class:`~steering_core.spec.method_config.AdapterConfig`."""
    adapter = config.adapter
    return AdapterSummary(
        adapter_kind=adapter.kind,
        rank=None if adapter.kind == "vector" else adapter.rank,
        activation=adapter.activation if adapter.kind == "nonlinear" else None,
    )
