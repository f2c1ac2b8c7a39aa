"""The ``layer_tensors`` export: the steering adapter as plain per-layer tensors, a JSON
description and a README (see :func:`export_layer_tensors`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from steering_core.artifact.exports.common import (
    base_model_json,
    check_export,
    method_of,
    need_tensors,
    steering_by_layer,
)
from steering_core.artifact.schema import ArtifactConfig
from steering_core.errors import ArtifactError, SteeringUserError
from steering_core.model.sites import sites_for_model_type
from steering_core.steering.adapter_modules import LoReFTIntervention

LAYER_TENSORS_FILE = "steering_tensors.safetensors"
LAYER_TENSORS_CONFIG = "steering_export.json"
LAYER_TENSORS_README = "README.md"
LAYER_TENSORS_FORMAT = "steering-layer-tensors"
LAYER_TENSORS_VERSION = 1

ACTIVATION_DEFINITIONS: dict[str, str] = {
    "silu": "silu(x) = x * sigmoid(x) (torch.nn.functional.silu)",
    "relu": "relu(x) = max(x, 0) (torch.nn.functional.relu)",
    "gelu": "exact GELU x * Phi(x), erf form (torch.nn.functional.gelu, approximate='none')",
    "tanh": "tanh(x) (torch.tanh)",
}

_SITE_WORDS = {
    "block_output": "the decoder layer's output: the residual stream after both residual adds",
    "mlp_output": "the value the MLP branch adds to the residual stream (before that add)",
    "attn_output": "the value the attention branch adds to the residual stream (before that add)",
}


def export_layer_tensors(artifact_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the steering adapter as plain per-layer tensors plus a JSON description.

    Files written into ``out_dir`` (created if needed):

    - ``steering_tensors.safetensors``: ``layers.{i}.{site}.vector`` [H] for vector adapters;
      ``layers.{i}.{site}.W_down`` [r, H] and ``layers.{i}.{site}.W_up`` [H, r] for linear and
      nonlinear ones (``f(h) = W_up @ act(W_down @ h)``, act the identity for linear);
      ``layers.{i}.{site}.R`` [r, H] (orthonormal rows), ``.W`` [r, H] and ``.b`` [r] for
      LoReFT (``f(h) = R^T (W h + b - R h)``). ``i`` is the 0-based decoder layer index; the
      shift is added, ``h <- h + f(h)``, in the trained dtype, at every token position (a ReFT
      adapter with prompt positions: at those only; the JSON's ``application`` says which).
    - ``steering_export.json``: format ``steering-layer-tensors`` v1, method, site (and the
      site's module path in the base architecture), kind, rank, activation (and its exact
      definition), layers, formula, tensor names and shapes, base model description.
    - ``README.md``: the same in prose with a torch snippet.

    Applies to post_block, the steering half of joint, and reft; lora and full raise
    :class:`ExportNotApplicableError` naming what applies instead. Returns the JSON written.
    """
    directory = Path(artifact_dir)
    config = check_export(directory, "layer_tensors")
    tensors = _export_tensors(directory, config)
    description = _description(config, tensors)
    kind, site = description["kind"], description["site"]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "export": LAYER_TENSORS_FORMAT, "site": site, "kind": kind}
    save_file(tensors, str(out / LAYER_TENSORS_FILE), metadata=metadata)
    (out / LAYER_TENSORS_CONFIG).write_text(json.dumps(description, indent=2) + "\n")
    (out / LAYER_TENSORS_README).write_text(_layer_tensors_readme(description))
    return description


def _export_tensors(directory: Path, config: ArtifactConfig) -> dict[str, torch.Tensor]:
    """Every steered layer's plain tensors, named ``layers.{i}.{site}.{name}``, on the CPU."""
    kind = str(config.adapter_kind)
    site = str(config.site)
    hidden = config.base_model.hidden_size
    by_layer = steering_by_layer(directory, config)
    tensors: dict[str, torch.Tensor] = {}
    for layer in config.layers:
        plain = _plain_layer_tensors(layer, kind, by_layer[layer], hidden, config.rank)
        for name, tensor in plain.items():
            tensors[f"layers.{layer}.{site}.{name}"] = tensor.detach().to("cpu").contiguous()
    return tensors


def _description(config: ArtifactConfig, tensors: dict[str, torch.Tensor]) -> dict[str, Any]:
    """The ``steering_export.json`` of the export: what is needed to apply its tensors."""
    kind = str(config.adapter_kind)
    site = str(config.site)
    description: dict[str, Any] = {
        "format": LAYER_TENSORS_FORMAT,
        "format_version": LAYER_TENSORS_VERSION,
        "tensors_file": LAYER_TENSORS_FILE,
        "method": method_of(config),
        "site": site,
        "site_description": _SITE_WORDS.get(site, site),
        "site_module": _site_module_path(config.base_model.architecture, site),
        "kind": kind,
        "rank": config.rank,
        "activation": config.activation if kind == "nonlinear" else None,
        "activation_definition": (
            ACTIVATION_DEFINITIONS.get(str(config.activation)) if kind == "nonlinear" else None
        ),
        "layers": list(config.layers),
        "layer_indexing": "0-based index into the base model's decoder layers",
        "formula": _formula(kind),
        "application": _application(config),
        "dtype": config.dtype,
        "tensors": {name: list(t.shape) for name, t in sorted(tensors.items())},
        "base_model": base_model_json(config),
    }
    if method_of(config) == "joint":
        description["note"] = (
            "steering half of a joint adapter only; the LoRA half is the 'peft_lora' export, and "
            "the trained model applies both"
        )
    return description


def _plain_layer_tensors(
    layer: int, kind: str, tensors: dict[str, Any], hidden: int, rank: int | None
) -> dict[str, torch.Tensor]:
    """Our parameter names -> the export's plain names (``vector``, ``W_down``, ``W_up``, ...)."""
    if kind == "vector":
        (vector,) = need_tensors(layer, tensors, "vector")
        return {"vector": vector}
    if kind in ("linear", "nonlinear"):
        down, up = need_tensors(layer, tensors, "down.weight", "up.weight")
        return {"W_down": down, "W_up": up}
    if kind == "loreft":
        raw, weight, bias = need_tensors(
            layer, tensors, "rotation_raw", "source.weight", "source.bias"
        )
        # R exactly as inference computes it (QR of rotation_raw), not a re-derivation.
        module = LoReFTIntervention(hidden, int(rank or raw.shape[0]), dtype=raw.dtype)
        module.import_state({"rotation_raw": raw, "source.weight": weight, "source.bias": bias})
        with torch.no_grad():
            rotation = module.rotation().detach()
        return {"R": rotation, "W": weight, "b": bias}
    raise ArtifactError(f"unknown adapter kind {kind!r} in the artifact config")


def _formula(kind: str) -> str:
    """The shift each kind adds, ``h <- h + f(h)``, in the export's tensor names."""
    return {
        "vector": "h <- h + vector",
        "linear": "h <- h + W_up @ (W_down @ h)",
        "nonlinear": "h <- h + W_up @ act(W_down @ h)",
        "loreft": "h <- h + R^T @ (W @ h + b - R @ h)",
    }[kind]


def _site_module_path(architecture: str, site: str) -> str | None:
    """The site's module path in the base architecture (``model.layers.{i}.mlp``), if known."""
    try:
        entry = sites_for_model_type(architecture)
    except SteeringUserError:
        return None
    sub = entry.site_path(site)
    return f"{entry.layers_path}.{{i}}" + (f".{sub}" if sub else "")


def _application(config: ArtifactConfig) -> str:
    """Where f(h) is added: every token, or (ReFT as pyreft runs it) the prompt's ends only."""
    where = "at every token position (prompt and generated tokens)"
    first_last = getattr(config.method, "first_last", None)
    if first_last is not None:
        first, last = first_last
        where = (
            f"only at the first {first} and the last {last} tokens of the prompt (counted among "
            "each row's own tokens, padding excluded), never on generated tokens"
        )
    return (
        "for every steered layer i, add f(h) to the output of the site module of layer i, "
        f"{where}; a strength s scales f(h)"
    )


def _layer_tensors_readme(d: dict[str, Any]) -> str:
    """The export's ``README.md``: the JSON description in prose, with a torch snippet."""
    kind, site = d["kind"], d["site"]
    module = d["site_module"] or f"the {site} site of layer {{i}}"
    names = {
        "vector": "vector",
        "linear": "W_down, W_up",
        "nonlinear": "W_down, W_up",
        "loreft": "R, W, b",
    }[kind]
    body = {
        "vector": "shift = t['vector']",
        "linear": "shift = (h @ t['W_down'].T) @ t['W_up'].T",
        "nonlinear": (
            f"shift = {_torch_activation(d['activation'])}(h @ t['W_down'].T) @ t['W_up'].T"
        ),
        "loreft": "shift = (h @ t['W'].T + t['b'] - h @ t['R'].T) @ t['R']",
    }[kind]
    lines = [
        f"# Steering adapter export ({LAYER_TENSORS_FORMAT} v{LAYER_TENSORS_VERSION})",
        "",
        f"Base model: `{d['base_model']['id']}` ({d['base_model']['architecture']}, hidden size "
        f"{d['base_model']['hidden_size']}, {d['base_model']['num_layers']} layers).",
        f"Method `{d['method']}`, kind `{kind}`, site `{site}`: {d['site_description']}.",
        f"Layers (0-based): {d['layers']}.",
        "",
        f"For each steered layer `i`, with tensors `layers.{{i}}.{site}.{{{names}}}` from "
        f"`{LAYER_TENSORS_FILE}`, add the shift to the output of `{module}`: "
        f"`{d['formula']}`. Where: {d['application'].split(', ', 1)[1]}.",
        "",
        "```python",
        "import torch",
        "from safetensors.torch import load_file",
        "",
        f"tensors = load_file('{LAYER_TENSORS_FILE}')",
        "",
        "def hook_for(i):",
        "    prefix = f'layers.{i}.'",
        "    t = {k.split('.')[-1]: v for k, v in tensors.items() if k.startswith(prefix)}",
        "    def hook(module, args, output):",
        "        h = output[0] if isinstance(output, tuple) else output",
        f"        {body}",
        "        h = h + shift.to(h.dtype)",
        "        return (h, *output[1:]) if isinstance(output, tuple) else h",
        "    return hook",
        "",
        f"for i in {d['layers']}:",
        f"    model.get_submodule(f'{module}').register_forward_hook(hook_for(i))",
        "```",
        "",
    ]
    if d.get("note"):
        lines += [f"Note: {d['note']}.", ""]
    return "\n".join(lines)


def _torch_activation(name: str | None) -> str:
    """The torch call of an activation, for the README's snippet."""
    return {
        "silu": "torch.nn.functional.silu",
        "relu": "torch.relu",
        "gelu": "torch.nn.functional.gelu",
        "tanh": "torch.tanh",
    }.get(str(name), "torch.nn.functional.silu")
