"""Per-layer figures of a stored adapter, for ``GET /v1/adapters/{ref}/layers`` (torch-free).

``parameter_norm`` is computed here from the safetensors file (its format is a length, a JSON
header and raw little-endian tensors; read with the standard library); the shift and residual
norms come from the ``layer_stats`` the engine measured at the end of training (absent for
adapters trained before it did, and for ZeRO-3 runs).
"""

from __future__ import annotations

import json
import math
import re
import struct
from array import array
from pathlib import Path
from typing import Any

from api.errors import ApiError

STEERING_FILE = "adapter_model.safetensors"
LAYER = re.compile(r"(?:^|\.)layers\.(\d+)\.")
_FORMATS = {"F32": ("f", 4), "F64": ("d", 8), "F16": ("e", 2)}


def _values(dtype: str, raw: bytes) -> list[float]:
    if dtype == "BF16":  # the high half of a float32
        halves = array("H", raw)
        return list(array("f", struct.pack(f"<{len(halves)}I", *(h << 16 for h in halves))))
    if dtype not in _FORMATS:
        raise ValueError(f"unsupported tensor dtype {dtype}")
    code, _ = _FORMATS[dtype]
    if code == "e":
        return list(struct.unpack(f"<{len(raw) // 2}e", raw))
    return list(array(code, raw))


def layer_parameter_norms(path: Path) -> dict[int, float]:
    """Frobenius norm of each layer's adapter tensors (``layers.<layer>.…``)."""
    data = path.read_bytes()
    (length,) = struct.unpack("<Q", data[:8])
    header: dict[str, Any] = json.loads(data[8 : 8 + length])
    body = data[8 + length :]
    squares: dict[int, float] = {}
    for name, info in header.items():
        if name == "__metadata__" or name.endswith("_raw") or not (found := LAYER.search(name)):
            continue  # (ReFT stores R and the free parameter it is derived from: count R once)
        start, end = info["data_offsets"]
        layer = int(found.group(1))
        squares[layer] = squares.get(layer, 0.0) + math.fsum(
            v * v for v in _values(info["dtype"], body[start:end])
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
            }
            for layer, norm in norms.items()
        ],
    }
