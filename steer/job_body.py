"""The body ``steer jobs create`` sends: a recipe (the API's own JSON shape, from a JSON or YAML
file) with the command's flags layered on top."""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Any

import typer

from steering_core.errors import ConfigValidationError
from steering_core.methods.registry import method_definition


def parse_layers(text: str | None) -> list[int] | str | None:
    """``0-11`` or ``2,5,7`` (or both: ``0-3,8``) as a list of layer indices; ``auto`` as is
    (the job scores every layer and steers the best, within ``--max-layers``)."""
    if not text:
        return None
    if text.strip() == "auto":
        return "auto"
    layers: list[int] = []
    for part in text.split(","):
        first, _, last = part.strip().partition("-")
        try:
            layers += list(range(int(first), int(last) + 1)) if last else [int(first)]
        except ValueError:
            raise typer.BadParameter(
                f"{part!r} is not a layer or a range of layers; use e.g. 0-11 or 2,5,7",
                param_hint="--layers",
            ) from None
    return layers


def read_recipe(path: Path | None) -> dict[str, Any]:
    """The job body in a JSON or YAML file (``.yaml``/``.yml``); {} without one."""
    if path is None:
        return {}
    import yaml

    try:
        text = path.read_text()
        yaml_file = path.suffix in (".yaml", ".yml")
        loaded = (yaml.safe_load(text) or {}) if yaml_file else json.loads(text)
    except (OSError, ValueError, yaml.YAMLError) as exc:
        raise typer.BadParameter(f"cannot read {path}: {exc}", param_hint="--recipe") from None
    if not isinstance(loaded, dict):
        raise typer.BadParameter(
            f"{path} holds a {type(loaded).__name__}, not a job body (an object)",
            param_hint="--recipe",
        )
    return loaded


def _rank_field(method: str) -> str:
    """The dotted path ``--rank`` sets: the method's first rank field (its registration says)."""
    try:
        fields = method_definition(method).rank_fields
    except ConfigValidationError as exc:  # a recipe's method type no method has
        raise typer.BadParameter(str(exc), param_hint="--recipe") from None
    if not fields:
        raise typer.BadParameter(f"the {method} method has no rank", param_hint="--rank")
    return fields[0]


def _site_field(method: str) -> str:
    """The dotted path ``--site``/``--layers`` set (``site``; ``trains.site`` for dpo)."""
    try:
        path = method_definition(method).site_field
    except ConfigValidationError as exc:
        raise typer.BadParameter(str(exc), param_hint="--recipe") from None
    if path is None:
        raise typer.BadParameter(f"the {method} method has no site", param_hint="--site")
    return path


def _get_field(block: dict[str, Any], path: str) -> dict[str, Any]:
    for name in path.split("."):
        block = block.get(name) or {}
    return dict(block)


def _set_field(block: dict[str, Any], path: str, value: Any) -> None:
    """``block["adapter"]["rank"] = value`` for ``path="adapter.rank"``, keeping the rest."""
    *parents, name = path.split(".")
    for parent in parents:
        block = block.setdefault(parent, {})
    block[name] = value


class ZeroStage(StrEnum):
    auto = "auto"
    zero = "0"
    one = "1"
    two = "2"
    three = "3"


def _compute_block(body: dict[str, Any], flags: dict[str, Any]) -> None:
    """Layer the ``--gpus --processes --zero-stage --offload-*`` flags (None: not given) on the
    recipe's ``compute`` block. ``--gpus`` replaces a recipe's top-level ``gpus`` shorthand."""
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return
    block = dict(body.get("compute") or {})
    for key in ("gpus", "processes"):
        if key in given:
            block[key] = given[key]
    if "gpus" in given:
        body.pop("gpus", None)
    deepspeed = {
        key: value
        for key, value in given.items()
        if key in ("zero_stage", "offload_optimizer", "offload_param")
    }
    if "zero_stage" in deepspeed:  # "auto", or a stage's number
        stage = str(deepspeed["zero_stage"])
        deepspeed["zero_stage"] = stage if stage == "auto" else int(stage)
    if deepspeed:
        block["deepspeed"] = {**(block.get("deepspeed") or {}), **deepspeed}
    body["compute"] = block


def build_job_body(
    recipe: dict[str, Any],
    *,
    model: str | None,
    training_file: str | None,
    method: str | None,
    site: str | None,
    layers: str | None,
    rank: int | None,
    max_layers: int | None = None,
    source: str | None = None,
    hyperparameters: dict[str, Any],
    suffix: str | None,
    seed: int | None,
    compute: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A job body from a recipe (the API's own JSON shape) with flags layered on top
    (``compute``: the compute flags by field name, None where not given)."""
    body = dict(recipe)
    _compute_block(body, compute or {})
    for key, value in (
        ("model", model),
        ("training_file", training_file),
        ("suffix", suffix),
        ("seed", seed),
    ):
        if value is not None:
            body[key] = value
    block_in = dict(body.get("method") or {"type": "post_block"})
    kind = method or block_in.get("type", "post_block")
    inner = dict(block_in.get(kind) or {}) if block_in.get("type") == kind else {}
    if site or layers or max_layers is not None:
        path = _site_field(kind)
        _set_field(
            inner,
            path,
            {
                **_get_field(inner, path),
                **({"name": site} if site else {}),
                **({"layers": parse_layers(layers)} if layers else {}),
                **({"max_layers": max_layers} if max_layers is not None else {}),
            },
        )
    if rank is not None:
        _set_field(inner, _rank_field(kind), rank)
    if source is not None:
        inner["source"] = source
    given = {k: v for k, v in hyperparameters.items() if v is not None}
    if given:
        inner["hyperparameters"] = {**inner.get("hyperparameters", {}), **given}
    body["method"] = {"type": kind, **({kind: inner} if inner else {})}
    return body
