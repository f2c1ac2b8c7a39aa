"""GET /v1/adapters/{reference}/export over real HTTP, with real tiny-llama artifacts: each format's
download is what the library writes, exports that do not apply are 400s naming ``format`` and
why, and the route is tenant-scoped, sha256-checked and answers 503 without the ML core."""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path
from typing import Any

import gguf
import pytest
import torch
from safetensors.torch import load as load_safetensors

from steering_core.artifact.exports import export_control_vector_gguf, export_layer_tensors
from steering_core.artifact.store import save_artifact
from steering_core.model.loading import load_model
from steering_core.steering.attach import attach_method
from tests.api.helpers import Api, assert_error, register_adapter
from tests.steering_core.helpers import randomize_adapters

FORMATS = ("layer_tensors", "control_vector_gguf", "peft_lora")

METHODS: dict[str, dict[str, Any]] = {
    "vector": {"type": "post_block", "site": {"layers": [1, 2]}, "adapter": {"kind": "vector"}},
    "vector_all": {"type": "post_block", "adapter": {"kind": "vector"}},
    "nonlinear": {"type": "post_block", "adapter": {"kind": "nonlinear", "rank": 4}},
    "joint": {"type": "joint", "adapter": {"kind": "vector"}},
    "lora": {"type": "lora"},
}


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    made = {}
    for name, method in METHODS.items():
        attached = attach_method(load_model("tiny-llama"), method)
        if attached.steering is not None:
            randomize_adapters(attached, seed=7, scale=0.5)
        with torch.no_grad():
            for param_name, param in attached.model.named_parameters():
                if "lora_B" in param_name:
                    param.normal_(0.0, 0.2)
        out = tmp_path_factory.mktemp(name) / "adapter"
        save_artifact(attached, out, base_model_id="tiny-llama")
        made[name] = out
    return made


def _files(artifact: Path) -> dict[str, bytes]:
    """Every file of the artifact by its relative name (``lora/adapter_config.json``)."""
    return {
        p.relative_to(artifact).as_posix(): p.read_bytes()
        for p in sorted(artifact.rglob("*"))
        if p.is_file()
    }


def _register(api: Api, artifacts: dict[str, Path], kind: str, **kwargs: Any) -> dict[str, Any]:
    return register_adapter(
        api, kwargs.pop("name", kind), files=_files(artifacts[kind]), method=METHODS[kind], **kwargs
    )


def _export(api: Api, reference: str, export_format: str | None, **params: Any) -> Any:
    if export_format is not None:
        params["format"] = export_format
    return api.client.get(f"/v1/adapters/{reference}/export", params=params)


def _untar(content: bytes) -> dict[str, bytes]:
    with tarfile.open(fileobj=io.BytesIO(content), mode="r:gz") as tar:
        return {
            m.name: tar.extractfile(m).read()  # type: ignore[union-attr]
            for m in tar.getmembers()
            if m.isfile()
        }


def _assert_download(response: Any, filename: str, media_type: str) -> bytes:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith(media_type)
    assert response.headers["content-disposition"] == f'attachment; filename="{filename}"'
    assert response.headers["x-content-sha256"] == hashlib.sha256(response.content).hexdigest()
    return bytes(response.content)


def test_layer_tensors_and_peft_lora_are_tar_gz_of_the_library_export(
    api: Api, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    row = _register(api, artifacts, "nonlinear", name="steered")
    content = _assert_download(
        _export(api, row["id"], "layer_tensors"),
        "steered-v1-layer_tensors.tar.gz",
        "application/gzip",
    )
    members = _untar(content)
    stem = "steered-v1-layer_tensors"
    assert sorted(members) == [
        f"{stem}/README.md",
        f"{stem}/steering_export.json",
        f"{stem}/steering_tensors.safetensors",
    ]
    local = export_layer_tensors(artifacts["nonlinear"], tmp_path / "local")
    assert json.loads(members[f"{stem}/steering_export.json"]) == local
    served = load_safetensors(members[f"{stem}/steering_tensors.safetensors"])
    expected = load_safetensors((tmp_path / "local" / "steering_tensors.safetensors").read_bytes())
    assert served.keys() == expected.keys() and len(served) == 2 * 3  # W_down, W_up x 3 layers
    assert all(torch.equal(served[k], expected[k]) for k in served)

    joint = _register(api, artifacts, "joint")
    content = _assert_download(
        _export(api, "joint@1", "peft_lora"), "joint-v1-peft_lora.tar.gz", "application/gzip"
    )
    members = _untar(content)
    stem = "joint-v1-peft_lora"
    assert sorted(members) == [
        f"{stem}/adapter_config.json",
        f"{stem}/adapter_model.safetensors",
        f"{stem}/steering_export.json",
    ]
    lora_dir = artifacts["joint"] / "lora"
    weights = "adapter_model.safetensors"
    assert members[f"{stem}/{weights}"] == (lora_dir / weights).read_bytes()
    served_config = json.loads(members[f"{stem}/adapter_config.json"])
    stored_config = json.loads((lora_dir / "adapter_config.json").read_text())
    # the same peft config, naming the base model as other machines know it
    assert served_config == {**stored_config, "base_model_name_or_path": "tiny-llama"}
    assert json.loads(members[f"{stem}/steering_export.json"])["method"] == "joint"
    # the joint's steering half too, by id
    layer_tensors = _untar(_export(api, joint["id"], "layer_tensors").content)
    assert "joint-v1-layer_tensors/steering_tensors.safetensors" in layer_tensors


def test_control_vector_gguf_is_the_file_itself(
    api: Api, artifacts: dict[str, Path], tmp_path: Path
) -> None:
    _register(api, artifacts, "vector", name="cv")
    content = _assert_download(
        _export(api, "cv", "control_vector_gguf"),
        "cv-v1-control_vector_gguf.gguf",
        "application/octet-stream",
    )
    export_control_vector_gguf(artifacts["vector"], tmp_path / "local.gguf")
    assert content == (tmp_path / "local.gguf").read_bytes()
    (tmp_path / "served.gguf").write_bytes(content)
    reader = gguf.GGUFReader(str(tmp_path / "served.gguf"))
    assert reader.fields["general.architecture"].contents() == "controlvector"
    assert reader.fields["controlvector.model_hint"].contents() == "llama"
    assert reader.fields["controlvector.layer_count"].contents() == 2
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.2"]

    # a vector that steers layer 0: refused (llama.cpp cannot), unless asked to drop it
    _register(api, artifacts, "vector_all", name="all")
    assert_error(
        _export(api, "all", "control_vector_gguf"),
        400,
        param="format",
        code="export_not_applicable",
        mentions=("layer 0", "drop_layer_0"),
    )
    dropped = _export(api, "all", "control_vector_gguf", drop_layer_0="true")
    (tmp_path / "dropped.gguf").write_bytes(
        _assert_download(dropped, "all-v1-control_vector_gguf.gguf", "application/octet-stream")
    )
    reader = gguf.GGUFReader(str(tmp_path / "dropped.gguf"))
    assert sorted(t.name for t in reader.tensors) == ["direction.1", "direction.2"]


@pytest.mark.parametrize(
    ("kind", "export_format", "mentions"),
    [
        ("lora", "layer_tensors", ("peft_lora",)),
        ("lora", "control_vector_gguf", ("not a control vector", "peft_lora")),
        ("nonlinear", "control_vector_gguf", ("nonlinear", "depends on the hidden state")),
        ("nonlinear", "peft_lora", ("no LoRA weights", "layer_tensors")),
    ],
)
def test_an_export_that_does_not_apply_is_a_400_naming_format(
    api: Api, artifacts: dict[str, Path], kind: str, export_format: str, mentions: tuple[str, ...]
) -> None:
    row = _register(api, artifacts, kind)
    assert_error(
        _export(api, row["id"], export_format),
        400,
        param="format",
        code="export_not_applicable",
        mentions=mentions,
    )


def test_unknown_or_missing_format_is_a_400(api: Api, artifacts: dict[str, Path]) -> None:
    row = _register(api, artifacts, "vector")
    assert_error(_export(api, row["id"], "onnx"), 400, param="format", mentions=FORMATS)
    assert_error(_export(api, row["id"], None), 400, param="format")


def test_another_tenants_adapter_is_not_found(api: Api, artifacts: dict[str, Path]) -> None:
    theirs = _register(api, artifacts, "vector", name="theirs", tenant="someone-else")
    for reference in (theirs["id"], "theirs@1", "theirs", "nobody@1"):
        for export_format in FORMATS:
            assert_error(
                _export(api, reference, export_format), 404, code="not_found", mentions=("adapter",)
            )


def test_a_corrupted_artifact_is_not_exported(api: Api, artifacts: dict[str, Path]) -> None:
    row = _register(api, artifacts, "vector", name="broken")
    stored = api.settings.adapters_dir / row["storage"] / "adapter_model.safetensors"
    stored.write_bytes(stored.read_bytes()[:-8] + b"\0" * 8)
    response = api.client.get(
        f"/v1/adapters/{row['id']}/export",
        params={"format": "control_vector_gguf"},
        headers={"connection": "close"},
    )
    assert_error(response, 500, code="artifact_corrupted")


def test_without_the_ml_core_exports_are_503(
    api: Api, artifacts: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    row = _register(api, artifacts, "vector")
    monkeypatch.setitem(sys.modules, "steering_core.artifact.exports", None)  # import now fails
    assert_error(
        _export(api, row["id"], "layer_tensors"),
        503,
        code="export_unavailable",
        mentions=("torch",),
    )


def test_the_api_knows_every_export_format_of_the_core() -> None:
    """The API checks ``format`` without importing the exports (they need torch): its list
    must be the core's."""
    from api.services.adapter_exports import EXPORT_FORMATS as API_FORMATS
    from steering_core.artifact.exports import EXPORT_FORMATS

    assert API_FORMATS == EXPORT_FORMATS
