"""Automatic layer choice, the torch-free half: ``site.layers: "auto"`` and its budget.

A method whose site is a :class:`SelectableSiteConfig` (``post_block``) may ask for
``layers: "auto"`` with a budget, either ``max_layers: k`` or ``max_parameters: n`` (the
trainable parameters the adapters may hold; every layer's adapter has the same size, so this is
``k = n // per_layer``). Before training, the engine scores every layer on a few training
batches and steers the best ``k`` (:mod:`steering_core.engine.layer_selection`, torch). The
trained
artifact records the chosen layers as an ordinary list, so it loads like any other.

The plain :class:`~steering_core.spec.method_config.SiteConfig` (joint, reft) refuses ``"auto"``:
joint's
LoRA adapts every layer anyway, and ReFT's interventions are position-limited, which the
first-order score does not model.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

from pydantic import (
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from steering_core.errors import ConfigValidationError
from steering_core.spec.method_config import AdapterConfig, SiteConfig

AUTO = "auto"
MAX_BUDGET_PARAMETERS = 10**12


class SelectableSiteConfig(SiteConfig):
    """A site whose layers may also be chosen by the engine: ``layers: "auto"`` with a budget."""

    allows_auto: ClassVar[bool] = True

    layers: list[int] | Literal["auto"] | None = Field(  # type: ignore[assignment]
        default=None,
        description='Decoder layer indices to steer (0-based); null steers every layer; "auto" '
        "steers the layers with the best first-order score on a few training batches, as many "
        "as max_layers or max_parameters allows.",
    )
    max_layers: int | None = Field(
        default=None,
        ge=1,
        le=100_000,
        description='With layers "auto": how many layers to steer.',
    )
    max_parameters: int | None = Field(
        default=None,
        ge=1,
        le=MAX_BUDGET_PARAMETERS,
        description='With layers "auto": the most trainable parameters the adapters may hold '
        "(as many layers as fit; every layer's adapter has the same size).",
    )

    @field_validator("layers")
    @classmethod
    def _layers_unique_non_negative(cls, layers: Any) -> Any:
        if layers == AUTO:
            return layers
        return super()._layers_unique_non_negative(layers)

    @model_validator(mode="after")
    def _budget_with_auto(self) -> SelectableSiteConfig:
        # Messages start with the field to change (the API's error names it as the param).
        budgets = [n for n in ("max_layers", "max_parameters") if getattr(self, n) is not None]
        if self.layers == AUTO and not budgets:
            raise ValueError(
                'layers "auto" needs a budget: set max_layers (how many layers to steer) or '
                "max_parameters (how many trainable parameters the adapters may hold)"
            )
        if self.layers != AUTO and budgets:
            raise ValueError(
                f'{budgets[0]} is a budget for layers "auto" only; set layers to "auto", or '
                f"leave {budgets[0]} out"
            )
        if len(budgets) > 1:
            raise ValueError(
                "max_parameters and max_layers are two budgets for the same choice: give one"
            )
        return self

    @model_serializer(mode="wrap")
    def _budget_only_when_set(
        self, handler: SerializerFunctionWrapHandler, _info: SerializationInfo
    ) -> Any:
        # A site with listed layers dumps as a plain SiteConfig does: stored jobs, artifacts
        # and the API's answers read the same as before a budget existed.
        data = handler(self)
        if isinstance(data, dict):
            for name in ("max_layers", "max_parameters"):
                if data.get(name) is None:
                    data.pop(name, None)
        return data

    @property
    def is_auto(self) -> bool:
        return self.layers == AUTO

    def resolved(self, layers: list[int]) -> SelectableSiteConfig:
        """This site with the chosen ``layers`` in place of ``"auto"`` and its budget."""
        return self.model_copy(
            update={"layers": sorted(layers), "max_layers": None, "max_parameters": None}
        )


def is_auto(site: SiteConfig | None) -> bool:
    return site is not None and getattr(site, "layers", None) == AUTO


def adapter_parameters_per_layer(adapter: AdapterConfig, hidden_size: int) -> int:
    """Trainable parameters of one layer's adapter: ``H`` (vector) or ``2·H·r`` (low rank)."""
    if adapter.kind == "vector":
        return hidden_size
    return 2 * hidden_size * adapter.rank


def layer_budget(
    site: SelectableSiteConfig,
    adapter: AdapterConfig,
    n_layers: int,
    hidden_size: int,
    *,
    prefix: str = "site",
    model: str | None = None,
) -> int:
    """How many layers ``"auto"`` steers; a :class:`BudgetError` naming the field when the
    budget is over the model's layer count or below one layer's adapter."""
    what = model or "this model"
    if site.max_layers is not None:
        if site.max_layers > n_layers:
            raise BudgetError(
                f"{prefix}.max_layers",
                f"{prefix}.max_layers={site.max_layers} is more than the {n_layers} decoder "
                f"layers of {what}; use 1..{n_layers} (or layers null to steer every layer)",
            )
        return site.max_layers
    assert site.max_parameters is not None  # the config's validator asks for one budget
    per_layer = adapter_parameters_per_layer(adapter, hidden_size)
    every = per_layer * n_layers
    if site.max_parameters < per_layer:
        raise BudgetError(
            f"{prefix}.max_parameters",
            f"{prefix}.max_parameters={site.max_parameters} is less than one layer's adapter "
            f"({per_layer:,} parameters on {what}); use {per_layer}..{every}",
        )
    if site.max_parameters > every:
        raise BudgetError(
            f"{prefix}.max_parameters",
            f"{prefix}.max_parameters={site.max_parameters} is more than the adapters of all "
            f"{n_layers} layers of {what} hold ({every:,}); use {per_layer}..{every} (or "
            "layers null to steer every layer)",
        )
    return site.max_parameters // per_layer


class BudgetError(ConfigValidationError):
    """A layer budget that does not fit the model; ``field`` is its dotted path."""

    def __init__(self, field: str, message: str):
        super().__init__(message)
        self.field = field


__all__ = [
    "AUTO",
    "BudgetError",
    "SelectableSiteConfig",
    "adapter_parameters_per_layer",
    "is_auto",
    "layer_budget",
]
