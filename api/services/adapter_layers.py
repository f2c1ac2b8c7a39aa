"""Per-layer figures of a stored adapter, for ``GET /v1/adapters/{ref}/layers`` (torch-free).

``parameter_norm`` is computed here from the safetensors file, read with the standard library
(``steering_core.artifact.safetensors_header``, which the worker's artifact check shares); the
shift and
residual norms come from the ``layer_stats`` the engine measured at the end of training (absent
for adapters trained before it did, and for ZeRO-3 runs). An adapter whose layers the engine
chose (``site.layers: "auto"``) also has ``selection``: every decoder layer's score, the
chosen ones marked, and the budget (the manifest's ``layer_selection``); each steered layer's
``score`` is its own (null without a selection).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from api.errors import ApiError
from steering_core.artifact.safetensors_header import read_floats, read_header

STEERING_FILE = "adapter_model.safetensors"
LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")


def layer_parameter_norms(path: Path) -> dict[int, float]:
    """Frobenius norm of each layer's adapter tensors (``layers.<layer>.…``)."""
    header = read_header(path)
    squares: dict[int, float] = {}
    for name, tensor in header.tensors.items():
        if name.endswith("_raw") or not (found := LAYER.search(name)):
            continue  # (ReFT stores R and the free parameter it is derived from: count R once)
        layer = int(found.group(1))
        squares[layer] = squares.get(layer, 0.0) + math.fsum(
            v * v for v in read_floats(header, tensor)
        )
    return {layer: math.sqrt(total) for layer, total in sorted(squares.items())}


def adapter_layers(adapter_id: str, files: dict[str, Path]) -> dict[str, Any]:
    config = json.loads(files["steering_config.json"].read_text())
    method = config.get("method") or {}
    if STEERING_FILE not in files:
        raise ApiError(
            400,
            f"adapter {adapter_id} is a {method.get('type')} adapter: it has no steering "
            "layers to describe",
            param="reference",
        )
    norms = layer_parameter_norms(files[STEERING_FILE])
    measured = {
        entry["layer"]: entry
        for entry in ((config.get("training_manifest") or {}).get("layer_stats") or [])
    }
    selection = _selection((config.get("training_manifest") or {}).get("layer_selection"))
    scores = {entry["layer"]: entry["score"] for entry in (selection or {}).get("layers", [])}
    site = method.get("site") or {}
    adapter = method.get("adapter") or {}
    return {
        "object": "adapter.layers",
        "adapter": adapter_id,
        "site": site.get("name"),
        "kind": adapter.get("kind") or method.get("type"),
        "layers": [
            {
                "layer": layer,
                "parameter_norm": norm,
                "shift_norm": measured.get(layer, {}).get("shift_norm"),
                "residual_norm": measured.get(layer, {}).get("residual_norm"),
                "relative_shift": measured.get(layer, {}).get("relative_shift"),
                "score": scores.get(layer),
            }
            for layer, norm in norms.items()
        ],
        "selection": selection,
    }


def _selection(recorded: Any) -> dict[str, Any] | None:
    """The engine's layer choice as the route shows it (None: the layers were listed)."""
    if not isinstance(recorded, dict):
        return None
    chosen = set(recorded.get("chosen") or [])
    return {
        "score": recorded.get("score"),
        "site": recorded.get("site"),
        "max_layers": recorded.get("max_layers"),
        "max_parameters": recorded.get("max_parameters"),
        "probe_batches": recorded.get("probe_batches"),
        "probe_tokens": recorded.get("probe_tokens"),
        "chosen": sorted(chosen),
        "layers": [
            {"layer": layer, "score": score, "chosen": layer in chosen}
            for layer, score in enumerate(recorded.get("scores") or [])
        ],
    }
