"""Reading safetensors files with the standard library only (no torch, no safetensors package).

The format: an 8-byte little-endian header length N, N bytes of JSON (tensor name ->
``{"dtype", "shape", "data_offsets": [begin, end]}``, plus an optional ``__metadata__`` of
strings), then the tensors' raw little-endian bytes, the offsets counted from the end of the
header. The API reads adapters with it (per-layer norms) and the worker checks artifacts with it,
neither of which may import torch.

:func:`read_header` reads only the header and the file's size, so checking a whole-model file
costs a few kilobytes of reading, yet a truncated file or a header that does not add up is
still caught: every tensor's byte range must match its dtype and shape, and the ranges must tile
the data section exactly (what the safetensors library itself demands).
"""

from __future__ import annotations

import json
import math
import struct
from array import array
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# Bytes per element; dtypes not listed here are accepted without their size being checked.
DTYPE_BYTES = {
    "BOOL": 1,
    "U8": 1,
    "I8": 1,
    "F8_E5M2": 1,
    "F8_E4M3": 1,
    "I16": 2,
    "U16": 2,
    "F16": 2,
    "BF16": 2,
    "I32": 4,
    "U32": 4,
    "F32": 4,
    "I64": 8,
    "U64": 8,
    "F64": 8,
}
# The safetensors library refuses headers above 100 MB; so do we, before allocating one.
MAX_HEADER_BYTES = 100_000_000
_FLOAT_CODES = {"F32": "f", "F64": "d"}


class InvalidSafetensors(ValueError):
    """The file is not a well-formed safetensors file; the message says what is wrong."""


@dataclass(frozen=True)
class TensorInfo:
    """One tensor's entry in the header; ``start``/``end`` count from the data section."""

    name: str
    dtype: str
    shape: tuple[int, ...]
    start: int
    end: int

    @property
    def numel(self) -> int:
        return math.prod(self.shape)


@dataclass(frozen=True)
class SafetensorsHeader:
    path: Path
    tensors: dict[str, TensorInfo]
    metadata: dict[str, str]
    data_start: int  # where the data section begins in the file (8 + header length)


def read_header(path: Path) -> SafetensorsHeader:
    """Parse and check the header of ``path``; :class:`InvalidSafetensors` if it is malformed or
    the file is shorter (or longer) than the header says. ``OSError`` if it cannot be read."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise InvalidSafetensors(f"{path.name} is {size} bytes: too short for a header")
        (length,) = struct.unpack("<Q", prefix)
        if length > MAX_HEADER_BYTES or 8 + length > size:
            raise InvalidSafetensors(
                f"{path.name} declares a {length}-byte header but the file is {size} bytes "
                "(truncated, or not a safetensors file)"
            )
        raw = handle.read(length)
    try:
        entries = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidSafetensors(f"{path.name}: the header is not valid JSON ({exc})") from exc
    if not isinstance(entries, dict):
        raise InvalidSafetensors(f"{path.name}: the header is not a JSON object")
    metadata = entries.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict):
        raise InvalidSafetensors(f"{path.name}: __metadata__ is not an object")
    tensors = {name: _tensor_info(path, name, entry) for name, entry in entries.items()}
    _check_layout(path, tensors, size - 8 - length)
    return SafetensorsHeader(path, tensors, metadata, 8 + length)


def _tensor_info(path: Path, name: str, entry: Any) -> TensorInfo:
    try:
        dtype, shape, (start, end) = entry["dtype"], entry["shape"], entry["data_offsets"]
        valid = (
            isinstance(dtype, str)
            and all(isinstance(d, int) and d >= 0 for d in shape)
            and isinstance(start, int)
            and isinstance(end, int)
            and 0 <= start <= end
        )
    except (TypeError, KeyError, ValueError):
        valid = False
    if not valid:
        raise InvalidSafetensors(
            f"{path.name}: tensor {name!r} has a malformed entry {entry!r} (expected dtype, "
            "shape and data_offsets [begin, end])"
        )
    info = TensorInfo(name, dtype, tuple(shape), start, end)
    width = DTYPE_BYTES.get(dtype)
    if width is not None and info.numel * width != end - start:
        raise InvalidSafetensors(
            f"{path.name}: tensor {name!r} ({dtype}, shape {info.shape}) needs "
            f"{info.numel * width} bytes but its offsets span {end - start}"
        )
    return info


def _check_layout(path: Path, tensors: dict[str, TensorInfo], data_bytes: int) -> None:
    """The byte ranges must follow one another from 0 to the end of the file, no gap, no
    overlap: a truncated file ends before the last range does."""
    position = 0
    for info in sorted(tensors.values(), key=lambda t: (t.start, t.end)):
        if info.start != position:
            raise InvalidSafetensors(
                f"{path.name}: tensor {info.name!r} starts at byte {info.start} of the data, "
                f"expected {position} (overlapping or missing data)"
            )
        position = info.end
    if position != data_bytes:
        raise InvalidSafetensors(
            f"{path.name}: the header describes {position} bytes of tensor data but the file "
            f"holds {data_bytes}" + (" (truncated)" if data_bytes < position else "")
        )


def read_floats(header: SafetensorsHeader, tensor: TensorInfo) -> list[float]:
    """The values of a floating-point tensor (F32, F64, F16, BF16), flattened."""
    with header.path.open("rb") as handle:
        handle.seek(header.data_start + tensor.start)
        raw = handle.read(tensor.end - tensor.start)
    if tensor.dtype == "BF16":  # the high half of a float32
        halves = array("H", raw)
        return list(array("f", struct.pack(f"<{len(halves)}I", *(h << 16 for h in halves))))
    if tensor.dtype == "F16":
        return list(struct.unpack(f"<{len(raw) // 2}e", raw))
    if tensor.dtype not in _FLOAT_CODES:
        raise ValueError(f"unsupported tensor dtype {tensor.dtype}")
    return list(array(_FLOAT_CODES[tensor.dtype], raw))
