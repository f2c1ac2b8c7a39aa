"""Exports of saved artifacts (steering_core.artifact.exports) on tiny-llama: the exported files,
applied
by plain torch / peft / a re-implementation of llama.cpp's control-vector loader, give the logits
of the artifact loaded by this library; and every export that does not apply is refused."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gguf
import pytest
import torch
from peft import AutoPeftModelForCausalLM, PeftModel
from safetensors.torch import load_file, save_file

from steering_core.artifact.exports import (
    EXPORT_FORMATS,
    ExportNotApplicableError,
    check_export,
    export_control_vector_gguf,
    export_layer_tensors,
    export_peft_lora,
)
from steering_core.artifact.store import load_artifact, save_artifact
from steering_core.errors import SteeringUserError
from steering_core.model.catalogue import public_model_id
from steering_core.model.loading import load_model
from steering_core.steering.attach import attach_method
from tests.steering_core.helpers import first, randomize_adapters, randomize_lora, token_batch

MODEL = "tiny-llama"
HIDDEN = 32


@pytest.fixture(scope="module")
def make_artifact(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    made: dict[str, Path] = {}

    def make(method: dict[str, Any], *, seed: int = 3, lora: bool = False) -> Path:
        key = json.dumps(method, sort_keys=True) + f"{seed}{lora}"
        if key not in made:
            attached = attach_method(load_model(MODEL), method)
            if attached.steering is not None:
                randomize_adapters(attached, seed=seed, scale=0.5)
            if lora:
                randomize_lora(attached, seed + 1)
            if method["type"] == "full":
                with torch.no_grad():
                    for param in attached.model.parameters():
                        param.add_(0.01)
            out = tmp_path_factory.mktemp("artifact") / "adapter"
            save_artifact(attached, out, base_model_id=MODEL)
            made[key] = out
        return made[key]

    return make


def _vector(site: str = "block_output", layers: list[int] | None = None) -> dict[str, Any]:
    return {
        "type": "post_block",
        "site": {"name": site, "layers": layers},
        "adapter": {"kind": "vector"},
    }


IDS = token_batch(seed=11, batch=2, length=7)


@torch.no_grad()
def _artifact_logits(artifact: Path, mode: str | None = None) -> torch.Tensor:
    attached = load_artifact(load_model(MODEL), artifact)
    if mode is not None:
        attached.set_inference_mode(mode)  # type: ignore[arg-type]
    return attached.model(input_ids=IDS).logits


@torch.no_grad()
def _hooked_logits(hooks: dict[str, Callable[[torch.Tensor], torch.Tensor]]) -> torch.Tensor:
    """Logits of the plain base model with ``h <- h + shift(h)`` at the named modules."""
    model = load_model(MODEL)
    handles = []
    for path, shift in hooks.items():

        def hook(_m: Any, _a: Any, output: Any, shift: Any = shift) -> Any:
            h = first(output)
            steered = h + shift(h).to(h.dtype)
            return (steered, *output[1:]) if isinstance(output, tuple) else steered

        handles.append(model.get_submodule(path).register_forward_hook(hook))
    try:
        return model(input_ids=IDS).logits
    finally:
        for handle in handles:
            handle.remove()


@torch.no_grad()
def _base_logits() -> torch.Tensor:
    return load_model(MODEL)(input_ids=IDS).logits


# -- layer tensors ------------------------------------------------------------------------------


def _shift_from_export(kind: str, activation: str | None, t: dict[str, torch.Tensor]) -> Any:
    """The export's documented formula, written with plain torch from its JSON alone."""
    act = {
        None: lambda x: x,
        "silu": torch.nn.functional.silu,
        "relu": torch.relu,
        "gelu": torch.nn.functional.gelu,
        "tanh": torch.tanh,
    }[activation]
    if kind == "vector":
        return lambda h: t["vector"].expand_as(h)
    if kind in ("linear", "nonlinear"):
        return lambda h: act(h @ t["W_down"].T) @ t["W_up"].T
    if kind == "loreft":
        return lambda h: (h @ t["W"].T + t["b"] - h @ t["R"].T) @ t["R"]
    raise AssertionError(kind)


def _apply_layer_tensors(out: Path) -> torch.Tensor:
    spec = json.loads((out / "steering_export.json").read_text())
    tensors = load_file(str(out / spec["tensors_file"]))
    hooks = {}
    for i in spec["layers"]:
        prefix = f"layers.{i}.{spec['site']}."
        own = {k.removeprefix(prefix): v for k, v in tensors.items() if k.startswith(prefix)}
        module = spec["site_module"].replace("{i}", str(i))
        hooks[module] = _shift_from_export(spec["kind"], spec["activation"], own)
    return _hooked_logits(hooks)


@pytest.mark.parametrize(
    ("method", "expected_names"),
    [
        (_vector(layers=[0, 2]), {"vector": [HIDDEN]}),
        (
            {"type": "post_block", "adapter": {"kind": "linear", "rank": 1}},
            {"W_down": [1, HIDDEN], "W_up": [HIDDEN, 1]},
        ),
        (
            {
                "type": "post_block",
                "adapter": {"kind": "nonlinear", "rank": 4, "activation": "gelu"},
            },
            {"W_down": [4, HIDDEN], "W_up": [HIDDEN, 4]},
        ),
        (
            {
                "type": "post_block",
                "site": {"name": "mlp_output", "layers": [1]},
                "adapter": {"kind": "nonlinear", "activation": "tanh"},
            },
            {"W_down": [8, HIDDEN], "W_up": [HIDDEN, 8]},
        ),
        (
            {"type": "post_block", "site": {"name": "attn_output"}, "adapter": {"kind": "vector"}},
            {"vector": [HIDDEN]},
        ),
        ({"type": "reft", "rank": 2}, {"R": [2, HIDDEN], "W": [2, HIDDEN], "b": [2]}),
    ],
    ids=["vector", "linear-r1", "nonlinear-gelu", "mlp-tanh", "attn-vector", "reft"],
)
def test_layer_tensors_applied_by_plain_torch_equal_the_artifact(
    make_artifact: Callable[..., Path],
    tmp_path: Path,
    method: dict[str, Any],
    expected_names: dict[str, list[int]],
) -> None:
    artifact = make_artifact(method)
    description = export_layer_tensors(artifact, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "README.md",
        "steering_export.json",
        "steering_tensors.safetensors",
    ]
    spec = json.loads((out / "steering_export.json").read_text())
    assert spec == description
    assert spec["format"] == "steering-layer-tensors" and spec["format_version"] == 1
    assert spec["base_model"]["architecture"] == "llama"
    assert spec["base_model"]["hidden_size"] == HIDDEN
    site = spec["site"]
    tensors = load_file(str(out / "steering_tensors.safetensors"))
    expected = {
        f"layers.{i}.{site}.{name}": shape
        for i in spec["layers"]
        for name, shape in expected_names.items()
    }
    assert {k: list(v.shape) for k, v in tensors.items()} == expected
    assert spec["tensors"] == dict(sorted(expected.items()))
    if method["type"] == "reft":
        for i in spec["layers"]:
            rot = tensors[f"layers.{i}.{site}.R"].double()
            assert torch.allclose(rot @ rot.T, torch.eye(2, dtype=torch.float64), atol=1e-5)
    if spec["activation"] == "gelu":
        assert "erf" in spec["activation_definition"]

    steered = _artifact_logits(artifact)
    assert not torch.allclose(steered, _base_logits(), atol=1e-4)  # the adapter does something
    torch.testing.assert_close(_apply_layer_tensors(out), steered, rtol=1e-5, atol=1e-5)


def test_layer_tensors_of_joint_are_its_steering_half(
    make_artifact: Callable[..., Path], tmp_path: Path
) -> None:
    artifact = make_artifact(
        {"type": "joint", "adapter": {"kind": "nonlinear", "rank": 2}}, lora=True
    )
    spec = export_layer_tensors(artifact, tmp_path)
    assert spec["method"] == "joint" and "peft_lora" in spec["note"]
    assert "note" in spec and "lora" not in json.dumps(spec["tensors"]).lower()
    adapter_only = _artifact_logits(artifact, "adapter_only")
    torch.testing.assert_close(_apply_layer_tensors(tmp_path), adapter_only, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "words"),
    [({"type": "lora"}, ("peft_lora",)), ({"type": "full"}, ("full", "model.safetensors"))],
)
def test_layer_tensors_refuse_weight_methods(
    make_artifact: Callable[..., Path], tmp_path: Path, method: dict, words: tuple[str, ...]
) -> None:
    artifact = make_artifact(method)
    with pytest.raises(ExportNotApplicableError) as info:
        export_layer_tensors(artifact, tmp_path / "out")
    assert isinstance(info.value, SteeringUserError)
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "out").exists()


# -- llama.cpp control vectors -------------------------------------------------------------------


def _read_gguf(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    reader = gguf.GGUFReader(str(path))
    fields = {k: f.contents() for k, f in reader.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: t for t in reader.tensors}
    return fields, tensors


def _llama_cpp_logits(path: Path) -> torch.Tensor:
    """Apply a control-vector file the way llama.cpp does (common_control_vector_load_one +
    llama_adapter_cvec::apply/apply_to): direction.n (n >= 1) is added to the output of
    0-based layer n, the residual stream after the block (llm_build_llama: build_cvec(cur, il))."""
    _, tensors = _read_gguf(path)
    hooks = {}
    for name, tensor in tensors.items():
        n = int(name.split(".")[1])
        assert n >= 1, "llama.cpp rejects direction.0"
        vector = torch.from_numpy(tensor.data.copy())
        hooks[f"model.layers.{n}"] = lambda h, v=vector: v.expand_as(h)
    return _hooked_logits(hooks)


def test_control_vector_gguf_round_trip_and_llama_cpp_layer_numbering(
    make_artifact: Callable[..., Path], tmp_path: Path
) -> None:
    artifact = make_artifact(_vector(layers=[1, 2]))
    path = tmp_path / "cv.gguf"
    summary = export_control_vector_gguf(artifact, path)
    assert summary["layers"] == [1, 2] and summary["exact"] is True
    assert summary["model_hint"] == "llama"

    fields, tensors = _read_gguf(path)
    assert fields == {
        "general.architecture": "controlvector",
        "controlvector.model_hint": "llama",
        "controlvector.layer_count": 2,
    }
    assert sorted(tensors) == ["direction.1", "direction.2"]
    saved = load_file(str(artifact / "adapter_model.safetensors"))
    for i in (1, 2):
        tensor = tensors[f"direction.{i}"]
        assert tensor.tensor_type == gguf.GGMLQuantizationType.F32
        assert [int(d) for d in tensor.shape] == [HIDDEN]
        assert torch.equal(torch.from_numpy(tensor.data.copy()), saved[f"layers.{i}.vector"])

    # our layer i is llama.cpp's direction.i: the file, applied as llama.cpp does, is the adapter
    torch.testing.assert_close(
        _llama_cpp_logits(path), _artifact_logits(artifact), rtol=1e-5, atol=1e-5
    )


def test_mlp_output_vectors_are_exact_control_vectors(
    make_artifact: Callable[..., Path], tmp_path: Path
) -> None:
    artifact = make_artifact(_vector(site="mlp_output", layers=[1, 2]))
    export_control_vector_gguf(artifact, tmp_path / "cv.gguf")
    torch.testing.assert_close(
        _llama_cpp_logits(tmp_path / "cv.gguf"), _artifact_logits(artifact), rtol=1e-5, atol=1e-5
    )


def test_joint_vector_half_is_a_control_vector(
    make_artifact: Callable[..., Path], tmp_path: Path
) -> None:
    artifact = make_artifact(
        {"type": "joint", "site": {"layers": [2]}, "adapter": {"kind": "vector"}}, lora=True
    )
    export_control_vector_gguf(artifact, tmp_path / "cv.gguf")
    torch.testing.assert_close(
        _llama_cpp_logits(tmp_path / "cv.gguf"),
        _artifact_logits(artifact, "adapter_only"),
        rtol=1e-5,
        atol=1e-5,
    )


def test_layer_0_cannot_be_steered_by_llama_cpp(
    make_artifact: Callable[..., Path], tmp_path: Path
) -> None:
    artifact = make_artifact(_vector())  # every layer, 0 included, all non-zero
    with pytest.raises(ExportNotApplicableError, match="layer 0") as info:
        export_control_vector_gguf(artifact, tmp_path / "refused.gguf")
    assert "drop_layer_0" in str(info.value)
    assert not (tmp_path / "refused.gguf").exists()

    summary = export_control_vector_gguf(artifact, tmp_path / "cv.gguf", drop_layer_0=True)
    assert summary["dropped_layers"] == [0] and summary["exact"] is False
    _, tensors = _read_gguf(tmp_path / "cv.gguf")
    assert sorted(tensors) == ["direction.1", "direction.2"]


def test_a_zero_layer_0_vector_is_skipped_exactly(
    make_artifact: Callable[..., Path], tmp_path: Path
) -> None:
    source = make_artifact(_vector())
    artifact = tmp_path / "zeroed"
    artifact.mkdir()
    for path in source.iterdir():
        (artifact / path.name).write_bytes(path.read_bytes())
    tensors = load_file(str(artifact / "adapter_model.safetensors"))
    tensors["layers.0.vector"] = torch.zeros_like(tensors["layers.0.vector"])
    save_file(tensors, str(artifact / "adapter_model.safetensors"), metadata={"format": "pt"})

    summary = export_control_vector_gguf(artifact, tmp_path / "cv.gguf")
    assert summary["exact"] is True and summary["layers"] == [1, 2]
    torch.testing.assert_close(
        _llama_cpp_logits(tmp_path / "cv.gguf"), _artifact_logits(artifact), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize(
    ("method", "words"),
    [
        ({"type": "post_block"}, ("'nonlinear'", "depends on the hidden state", "layer_tensors")),
        (
            {"type": "post_block", "adapter": {"kind": "linear", "rank": 1}},
            ("'linear'", "depends on the hidden state"),
        ),
        ({"type": "reft", "rank": 2}, ("LoReFT", "layer_tensors")),
        ({"type": "lora"}, ("not a control vector", "peft_lora")),
        ({"type": "full"}, ("not a control vector",)),
        (_vector(site="attn_output"), ("attn_output", "MLP")),
    ],
    ids=["nonlinear", "linear-r1", "reft", "lora", "full", "attn-vector"],
)
def test_control_vector_refusals(
    make_artifact: Callable[..., Path], tmp_path: Path, method: dict, words: tuple[str, ...]
) -> None:
    artifact = make_artifact(method)
    with pytest.raises(ExportNotApplicableError) as info:
        export_control_vector_gguf(artifact, tmp_path / "cv.gguf")
    for word in words:
        assert word in str(info.value)
    assert not (tmp_path / "cv.gguf").exists()


# -- peft LoRA ---------------------------------------------------------------------------------


@torch.no_grad()
def _peft_logits(directory: Path) -> torch.Tensor:
    model = PeftModel.from_pretrained(load_model(MODEL), str(directory))
    model.eval()
    return model(input_ids=IDS).logits


@pytest.mark.parametrize(
    ("method", "mode"),
    [
        ({"type": "lora", "lora": {"rank": 4, "alpha": 16}}, None),
        ({"type": "joint", "adapter": {"kind": "nonlinear", "rank": 2}}, "lora_only"),
    ],
    ids=["lora", "joint"],
)
def test_peft_lora_loads_in_peft_and_equals_the_lora_mode(
    make_artifact: Callable[..., Path], tmp_path: Path, method: dict, mode: str | None
) -> None:
    artifact = make_artifact(method, lora=True)
    description = export_peft_lora(artifact, tmp_path / "peft")
    out = tmp_path / "peft"
    assert {"adapter_config.json", "adapter_model.safetensors"} <= {p.name for p in out.iterdir()}
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == "LORA" and config["r"] == description["rank"]
    weights = load_file(str(out / "adapter_model.safetensors"))
    assert weights and all("lora_A" in k or "lora_B" in k for k in weights)
    assert all("steering" not in k for k in weights)

    expected = _artifact_logits(artifact, mode)
    assert not torch.allclose(expected, _base_logits(), atol=1e-4)
    torch.testing.assert_close(_peft_logits(out), expected, rtol=1e-5, atol=1e-5)
    if mode is not None:  # the joint's steering half is not in the peft export
        assert not torch.allclose(_peft_logits(out), _artifact_logits(artifact), atol=1e-4)


def test_peft_lora_names_the_base_model_as_other_machines_know_it(
    make_artifact: Callable[..., Path], tmp_path: Path
) -> None:
    artifact = make_artifact({"type": "lora", "lora": {"rank": 4, "alpha": 16}}, lora=True)
    export_peft_lora(artifact, tmp_path / "peft")
    config = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == MODEL  # no public name: the catalogue name
    assert public_model_id("smollm2-135m-instruct") == "HuggingFaceTB/SmolLM2-135M-Instruct"
    assert public_model_id("gemma-3-270m") == "google/gemma-3-270m"


def test_auto_peft_loads_an_export_moved_away_from_the_server(tmp_path: Path) -> None:
    """A base model that is a local directory is named by that directory; the export, copied
    anywhere, loads with ``AutoPeftModelForCausalLM`` alone and computes what the artifact
    computes."""
    base_dir = tmp_path / "base-model"
    load_model(MODEL).save_pretrained(str(base_dir))
    attached = attach_method(load_model(str(base_dir)), {"type": "lora", "lora": {"rank": 4}})
    randomize_lora(attached, 5)
    artifact = tmp_path / "artifact"
    save_artifact(attached, artifact, base_model_id=str(base_dir))
    export_peft_lora(artifact, tmp_path / "server" / "peft")
    moved = shutil.copytree(tmp_path / "server" / "peft", tmp_path / "elsewhere" / "peft")
    shutil.rmtree(tmp_path / "server")
    with torch.no_grad():
        loaded = AutoPeftModelForCausalLM.from_pretrained(str(moved)).eval()
        expected = load_artifact(load_model(str(base_dir)), artifact).model(input_ids=IDS).logits
        torch.testing.assert_close(loaded(input_ids=IDS).logits, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    ("method", "words"),
    [
        (_vector(layers=[1]), ("post_block", "layer_tensors", "control_vector_gguf")),
        ({"type": "reft", "rank": 2}, ("reft", "layer_tensors")),
        ({"type": "full"}, ("full", "model.safetensors")),
    ],
    ids=["post_block", "reft", "full"],
)
def test_peft_lora_refusals(
    make_artifact: Callable[..., Path], tmp_path: Path, method: dict, words: tuple[str, ...]
) -> None:
    with pytest.raises(ExportNotApplicableError) as info:
        export_peft_lora(make_artifact(method), tmp_path / "peft")
    for word in words:
        assert word in str(info.value)


def test_unknown_format_names_the_known_ones(make_artifact: Callable[..., Path]) -> None:
    with pytest.raises(ExportNotApplicableError) as info:
        check_export(make_artifact(_vector(layers=[1])), "onnx")
    for name in EXPORT_FORMATS:
        assert name in str(info.value)
