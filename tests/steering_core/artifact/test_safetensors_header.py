"""The standard-library safetensors reader against files written by the safetensors library."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from steering_core.artifact.safetensors_header import InvalidSafetensors, read_floats, read_header

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture
def written(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor]]:
    generator = torch.Generator().manual_seed(0)
    tensors = {
        "layers.0.down.weight": torch.randn(4, 8, generator=generator),
        "layers.0.vector": torch.randn(8, generator=generator).to(torch.float16),
        "layers.1.up.weight": torch.randn(8, 4, generator=generator).to(torch.bfloat16),
        "layers.1.double": torch.randn(2, 3, generator=generator).to(torch.float64),
        "counts": torch.arange(5, dtype=torch.int64),
        "empty": torch.zeros(0, 8),
    }
    path = tmp_path / "t.safetensors"
    save_file(tensors, str(path), metadata={"format": "pt"})
    return path, tensors


def test_the_header_matches_what_the_library_wrote(
    written: tuple[Path, dict[str, torch.Tensor]],
) -> None:
    path, tensors = written
    header = read_header(path)
    assert header.metadata == {"format": "pt"}
    assert set(header.tensors) == set(tensors)
    dtypes = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16"}
    dtypes |= {torch.float64: "F64", torch.int64: "I64"}
    for name, tensor in tensors.items():
        info = header.tensors[name]
        assert (info.name, info.shape, info.dtype) == (
            name,
            tuple(tensor.shape),
            dtypes[tensor.dtype],
        )
        assert info.numel == tensor.numel()


def test_float_values_match_the_library(written: tuple[Path, dict[str, torch.Tensor]]) -> None:
    path, tensors = written
    header = read_header(path)
    for name in (
        "layers.0.down.weight",
        "layers.0.vector",
        "layers.1.up.weight",
        "layers.1.double",
    ):
        expected = tensors[name].to(torch.float64).flatten().tolist()
        assert read_floats(header, header.tensors[name]) == pytest.approx(expected, rel=1e-7)
    with pytest.raises(ValueError, match="unsupported tensor dtype I64"):
        read_floats(header, header.tensors["counts"])


def _rewrite(path: Path, header: dict, data: bytes) -> None:
    raw = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + data)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncated", r"describes \d+ bytes of tensor data but the file holds \d+ \(truncated\)"),
        ("tiny", "too short for a header"),
        ("header_length", "declares a .*-byte header"),
        ("not_json", "header is not valid JSON"),
        ("bad_entry", "malformed entry"),
        ("wrong_size", r"needs 128 bytes but its offsets span 64"),
        ("gap", "starts at byte 8 of the data, expected 0"),
        ("trailing", "the file holds 136"),
    ],
)
def test_malformed_files_are_refused_with_a_clear_message(
    tmp_path: Path, damage: str, message: str
) -> None:
    path = tmp_path / "bad.safetensors"
    save_file({"w": torch.ones(4, 8)}, str(path))
    raw = path.read_bytes()
    good = {"w": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 128]}}
    body = b"\0" * 128
    if damage == "truncated":
        path.write_bytes(raw[:-10])
    elif damage == "tiny":
        path.write_bytes(raw[:5])
    elif damage == "header_length":
        path.write_bytes(struct.pack("<Q", 10**6) + raw[8:])
    elif damage == "not_json":
        path.write_bytes(struct.pack("<Q", 4) + b"{no}" + body)
    elif damage == "bad_entry":
        _rewrite(path, {"w": {"dtype": "F32", "shape": "4x8"}}, body)
    elif damage == "wrong_size":
        _rewrite(path, {"w": {"dtype": "F32", "shape": [4, 8], "data_offsets": [0, 64]}}, body)
    elif damage == "gap":
        _rewrite(path, {"w": {"dtype": "F32", "shape": [4, 8], "data_offsets": [8, 136]}}, body)
    elif damage == "trailing":
        _rewrite(path, good, body + b"\0" * 8)
    with pytest.raises(InvalidSafetensors, match=message):
        read_header(path)


def test_the_reader_imports_no_torch() -> None:
    script = (
        "import sys\n"
        "import steering_core.artifact.safetensors_header, steering_core.artifact.check\n"
        "print([m for m in ('torch', 'safetensors', 'numpy') if m in sys.modules])"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    assert result.stdout.strip() == "[]"
