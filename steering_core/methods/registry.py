"""The method registry: definitions discovered through Python entry points. Torch-free.

Each installed distribution may declare methods in the ``steering_service.methods`` entry point
group (this project declares its own five in ``pyproject.toml``); each entry point names a
:class:`~steering_core.methods.definition.MethodDefinition`. Discovery runs once per process, on
first use. :data:`MethodConfig`, the discriminated union of every method's config (what
``TrainingSpec.method`` and the artifact's ``method`` accept), is built from it when this module
is imported.
"""

from __future__ import annotations

import functools
import importlib.metadata
from collections.abc import Iterable
from typing import Annotated, Any, Union

from pydantic import Field, ValidationError

from steering_core.errors import ConfigValidationError
from steering_core.methods.definition import MethodDefinition
from steering_core.spec.method_config import StrictModel

ENTRY_POINT_GROUP = "steering_service.methods"


class MethodRegistryError(RuntimeError):
    """An installed method's entry point is broken (the service cannot start with it)."""


def discover(entries: Iterable[importlib.metadata.EntryPoint]) -> dict[str, MethodDefinition]:
    """The definitions ``entries`` name, by method name (sorted); a broken entry point is a
    :class:`MethodRegistryError` that names it."""
    found: dict[str, MethodDefinition] = {}
    for entry in entries:
        try:
            definition = entry.load()
        except Exception as exc:
            raise MethodRegistryError(
                f"method entry point {entry.name!r} ({entry.value}) does not load: {exc}"
            ) from exc
        if not isinstance(definition, MethodDefinition):
            raise MethodRegistryError(
                f"method entry point {entry.name!r} ({entry.value}) is a "
                f"{type(definition).__name__}, not a MethodDefinition"
            )
        if definition.name != entry.name:
            raise MethodRegistryError(
                f"method entry point {entry.name!r} names a definition called {definition.name!r}"
            )
        if entry.name in found and found[entry.name] != definition:
            raise MethodRegistryError(f"method {entry.name!r} is registered twice")
        found[entry.name] = definition
    if not found:
        raise MethodRegistryError(
            f"no methods are registered in the {ENTRY_POINT_GROUP!r} entry point group: "
            "is steering-service installed (pip install -e .)?"
        )
    return dict(sorted(found.items()))


@functools.cache
def _definitions() -> dict[str, MethodDefinition]:
    return discover(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def method_names() -> list[str]:
    """Every registered method's name, sorted."""
    return list(_definitions())


def method_definitions() -> list[MethodDefinition]:
    return list(_definitions().values())


def method_definition(name: str) -> MethodDefinition:
    try:
        return _definitions()[name]
    except KeyError:
        raise ConfigValidationError(
            f"unknown method {name!r}; available: {', '.join(method_names())}"
        ) from None


def _config_union() -> Any:
    configs = tuple(d.config for d in method_definitions())
    if len(configs) == 1:
        return configs[0]
    return Annotated[Union[configs], Field(discriminator="type")]  # noqa: UP007 (a runtime tuple)


MethodConfig = _config_union()


class MethodEnvelope(StrictModel):
    """Wrapper that lets a bare method config be parsed from JSON."""

    method: MethodConfig  # type: ignore[valid-type]


def parse_method(data: dict[str, Any] | str) -> Any:
    """Parse a method config from a dict or a JSON string (``{"type": "post_block", ...}``)."""
    if isinstance(data, str):
        return MethodEnvelope.model_validate_json('{"method": ' + data + "}").method
    return MethodEnvelope.model_validate({"method": data}).method


def as_method_config(config: Any) -> Any:
    """A method config from a config object, a dict or a JSON string."""
    if isinstance(config, dict | str):
        try:
            return parse_method(config)
        except ValidationError as exc:
            raise ConfigValidationError(f"invalid method config: {exc}") from exc
    return config
