"""The building blocks of method configs: site, adapter and LoRA settings. Pydantic, torch-free.

These models cross process boundaries (API -> worker -> training subprocess -> artifact), so they
forbid unknown fields, and, like every model that reads outside input (:class:`InputModel`),
refuse booleans as numbers and strings that are not valid Unicode. Each method's own config
lives in its folder (``steering_core/methods/<name>/config.py``) and is built from these blocks.
Bounds that depend on the model (layer indices, rank vs hidden size) are checked by the method's
definition (:meth:`~steering_core.methods.definition.MethodDefinition.check_sizes`).
"""

from __future__ import annotations

import types
from typing import (
    Annotated,
    Any,
    ClassVar,
    ForwardRef,
    Literal,
    TypeVar,
    Union,
    get_args,
    get_origin,
)

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from steering_core.data.text_checks import lone_surrogate

SiteName = Literal["block_output", "mlp_output", "attn_output"]
AdapterKind = Literal["vector", "linear", "nonlinear"]
Activation = Literal["silu", "relu", "gelu", "tanh"]
DTypeName = Literal["auto", "float32", "bfloat16", "float16", "float64"]
InferenceMode = Literal["all", "lora_only", "adapter_only"]

SITE_NAMES: tuple[str, ...] = ("block_output", "mlp_output", "attn_output")
MAX_RANK = 4096


def _members(annotation: Any) -> tuple[Any, ...]:
    """The types a value of ``annotation`` may have: unions split, ``Annotated`` unwrapped."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _members(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return tuple(m for arg in get_args(annotation) for m in _members(arg))
    return (annotation,)


def _takes_bool(members: tuple[Any, ...]) -> bool:
    """Whether a boolean is a value of one of ``members`` (or may be: ``Any``, unresolved)."""
    for member in members:
        if get_origin(member) is Literal:
            if any(isinstance(v, bool) for v in get_args(member)):
                return True
        elif member in (bool, Any, object) or isinstance(member, TypeVar | ForwardRef | str):
            return True
    return False


def _takes_number(members: tuple[Any, ...]) -> bool:
    for member in members:
        if get_origin(member) is Literal:
            if any(
                isinstance(v, int | float) and not isinstance(v, bool) for v in get_args(member)
            ):
                return True
        elif member is int or member is float:
            return True
    return False


def _item_types(members: tuple[Any, ...], value: Any) -> tuple[Any, ...]:
    """The types an item of the container ``value`` may have under ``members``."""
    items: list[Any] = []
    for member in members:
        origin, args = get_origin(member), get_args(member)
        if isinstance(value, dict) and origin is dict and len(args) == 2:
            items += _members(args[1])
        elif isinstance(value, list | tuple) and origin in (list, tuple, set, frozenset):
            items += [m for arg in args if arg is not Ellipsis for m in _members(arg)]
    return tuple(items)


def boolean_as_number(annotation: Any, value: Any) -> str | None:
    """Where ``value`` holds a boolean that ``annotation`` would take as a number (``""``: the
    value itself; ``"[2]"``, ``"['k']"``: an item), or None. Pydantic's lax mode reads JSON
    ``true``/``false`` as 1/0 for ``int`` and ``float`` fields, and for ``Literal`` numbers."""
    stack: list[tuple[tuple[Any, ...], Any, str]] = [(_members(annotation), value, "")]
    while stack:
        members, item, where = stack.pop()
        if isinstance(item, bool):
            if _takes_number(members) and not _takes_bool(members):
                return where
        elif isinstance(item, dict | list | tuple):
            inner = _item_types(members, item)
            if inner:
                pairs = item.items() if isinstance(item, dict) else enumerate(item)
                stack += [(inner, v, f"{where}[{k!r}]") for k, v in pairs]
    return None


def unicode_problem(value: Any) -> str | None:
    """The first string in ``value`` (a string, or strings in lists and dicts, keys included)
    that is not valid Unicode, and why; None when there is none. Models are left to their own
    validation."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            problem = lone_surrogate(item)
            if problem is not None:
                return problem
        elif isinstance(item, dict):
            stack += [*item.keys(), *item.values()]
        elif isinstance(item, list | tuple | set | frozenset):
            stack += list(item)
    return None


class InputModel(BaseModel):
    """Base of every model that reads outside input (configs, specs, API request bodies).

    Numbers are numbers: JSON ``true``/``false`` is refused where a field takes a number, not
    read as 1/0 (pydantic's lax mode would; its strict mode would also refuse ``"auto"``-style
    unions of strings and lists read from JSON files as tuples). Text is text: a string holding
    a lone surrogate is refused (see :mod:`steering_core.data.text_checks`).
    """

    @model_validator(mode="before")
    @classmethod
    def _no_booleans_as_numbers(cls, data: Any) -> Any:
        # A model validator, not a field validator on "*": a before-validator on a union's
        # discriminator field (every method config's ``type``) is not allowed. Its error is
        # located at the model; the message starts with the field's name, which the API's
        # error mapping (``api.errors.error_param``) turns into the field's path.
        if not isinstance(data, dict):
            return data
        for name, field in cls.model_fields.items():
            key = field.alias or name
            if key not in data or not isinstance(data[key], bool | dict | list | tuple):
                continue
            where = boolean_as_number(field.annotation, data[key])
            if where is not None:
                got = f"{str(data[key]).lower()}" if where == "" else f"a boolean at {where}"
                raise ValueError(
                    f"{key}: expected a number, got {got} (true/false are not numbers)"
                )
        return data

    @field_validator("*", mode="after")
    @classmethod
    def _valid_unicode(cls, value: Any) -> Any:
        if isinstance(value, int | float | bool | BaseModel) or value is None:
            return value
        problem = unicode_problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


class StrictModel(InputModel):
    """Base of every config: unknown fields are errors, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SiteConfig(StrictModel):
    """Where adapters are applied: the site inside each steered decoder layer, and which layers.

    ``layers: "auto"`` (the engine chooses) is for sites that allow it
    (:class:`~steering_core.spec.layer_budget.SelectableSiteConfig`); this one refuses it by name.
    """

    allows_auto: ClassVar[bool] = False

    name: SiteName = "block_output"
    layers: list[int] | None = Field(
        default=None,
        description="Decoder layer indices to steer (0-based); null steers every layer.",
    )

    @field_validator("layers", mode="before")
    @classmethod
    def _auto_where_allowed(cls, layers: Any) -> Any:
        if layers == "auto" and not cls.allows_auto:
            raise ValueError(
                'layers "auto" (the engine chooses the layers) is not available for this '
                "method's site; name the layers, or use null for every layer"
            )
        return layers

    @field_validator("layers")
    @classmethod
    def _layers_unique_non_negative(cls, layers: list[int] | None) -> list[int] | None:
        if layers is None:
            return None
        if not layers:
            raise ValueError("layers must name at least one layer, or be null for all layers")
        bad = [i for i in layers if i < 0]
        if bad:
            raise ValueError(f"layer indices must be >= 0, got {bad}")
        if len(set(layers)) != len(layers):
            raise ValueError(f"layer indices must be unique, got {layers}")
        return sorted(layers)


class AdapterConfig(StrictModel):
    """The per-layer steering adapter ``h <- h + f(h)`` (METHOD.md section 2)."""

    kind: AdapterKind = "nonlinear"
    rank: int = Field(default=8, ge=1, le=MAX_RANK)
    activation: Activation = "silu"
    dtype: DTypeName = Field(default="auto", description="'auto' uses the base model's dtype.")
    init_scale: float = Field(
        default=1e-3, gt=0, le=1.0, description="Scale applied to W_down after Kaiming init."
    )


class LoraConfig(StrictModel):
    """peft LoRA settings. ``target_modules`` null means the architecture's seven projections."""

    rank: int = Field(default=8, ge=1, le=MAX_RANK)
    alpha: float = Field(default=8.0, gt=0, le=1e6)
    dropout: float = Field(default=0.0, ge=0.0, lt=1.0)
    target_modules: list[str] | None = None

    @field_validator("target_modules")
    @classmethod
    def _targets_non_empty(cls, targets: list[str] | None) -> list[str] | None:
        if targets is not None and not targets:
            raise ValueError("target_modules must name at least one module, or be null")
        return targets
