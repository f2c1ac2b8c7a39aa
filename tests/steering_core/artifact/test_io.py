"""Artifacts: save, load in a fresh process, and clear errors for bad files and wrong bases."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file

from steering_core.artifact.store import load_artifact, read_artifact_config, save_artifact
from steering_core.errors import ArtifactError
from steering_core.model.loading import build_tiny_model
from steering_core.steering.attach import attach_method
from tests.steering_core.helpers import token_batch

METHODS = {
    "post_block": {"type": "post_block"},
    "post_block_vector_mlp": {
        "type": "post_block",
        "site": {"name": "mlp_output", "layers": [1]},
        "adapter": {"kind": "vector"},
    },
    "joint": {"type": "joint", "orthogonality": {"every_n_steps": 1}},
    "lora": {"type": "lora"},
    "reft": {"type": "reft"},
    "full": {"type": "full"},
}

LOAD_SCRIPT = """
import sys, torch
from steering_core.artifact.store import load_artifact
from steering_core.model.loading import build_tiny_model
model = build_tiny_model(sys.argv[1])
attached = load_artifact(model, sys.argv[2], check_content_hash=True)
ids = torch.load(sys.argv[3], weights_only=True)
with torch.no_grad():
    logits = attached.model(input_ids=ids).logits
torch.save(logits, sys.argv[4])
"""


def _trained_like(method: dict, family: str = "llama"):
    """Attach and move the trainable weights away from their init, as training would."""
    model = build_tiny_model(family)
    attached = attach_method(model, method)
    generator = torch.Generator().manual_seed(7)
    with torch.no_grad():
        for _, param in attached.trainable_named_parameters():
            param.add_(torch.randn(param.shape, generator=generator) * 0.05)
    return attached


@pytest.mark.parametrize("name", list(METHODS))
def test_round_trip_in_a_fresh_process(name: str, tmp_path: Path) -> None:
    attached = _trained_like(METHODS[name])
    ids = token_batch()
    with torch.no_grad():
        expected = attached.model(input_ids=ids).logits
    config = save_artifact(attached, tmp_path / "artifact", base_model_id="tiny-llama")
    assert config.method.type == METHODS[name]["type"]
    torch.save(ids, tmp_path / "ids.pt")
    subprocess.run(
        [
            sys.executable,
            "-c",
            LOAD_SCRIPT,
            "llama",
            str(tmp_path / "artifact"),
            str(tmp_path / "ids.pt"),
            str(tmp_path / "logits.pt"),
        ],
        check=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    loaded = torch.load(tmp_path / "logits.pt", weights_only=True)
    assert torch.equal(loaded, expected)


def test_config_file_describes_the_adapter(tmp_path: Path) -> None:
    attached = _trained_like({"type": "post_block", "site": {"layers": [0, 2]}})
    save_artifact(attached, tmp_path, base_model_id="tiny-llama", training_manifest={"seed": 42})
    raw = json.loads((tmp_path / "steering_config.json").read_text())
    assert raw["format_version"] == 1
    assert raw["site"] == "block_output" and raw["layers"] == [0, 2]
    assert raw["adapter_kind"] == "nonlinear" and raw["rank"] == 8 and raw["activation"] == "silu"
    assert raw["base_model"]["architecture"] == "llama"
    assert raw["base_model"]["hidden_size"] == 32 and raw["base_model"]["num_layers"] == 3
    assert len(raw["base_model"]["content_hash"]) == 64
    assert raw["parameters"]["trainable"] == 2 * 2 * 32 * 8
    assert set(raw["library_versions"]) >= {"torch", "transformers", "peft"}
    assert raw["training_manifest"] == {"seed": 42}
    tensors = load_file(str(tmp_path / "adapter_model.safetensors"))
    assert sorted(tensors) == [
        "layers.0.down.weight",
        "layers.0.up.weight",
        "layers.2.down.weight",
        "layers.2.up.weight",
    ]
    assert tensors["layers.0.down.weight"].shape == (8, 32)
    assert not list(tmp_path.glob("*.bin")) and not list(tmp_path.glob("*.pt"))


def test_lora_half_of_joint_loads_with_plain_peft(tmp_path: Path) -> None:
    attached = _trained_like(METHODS["joint"])
    save_artifact(attached, tmp_path)
    ids = token_batch()
    attached.set_inference_mode("lora_only")
    with torch.no_grad():
        expected = attached.model(input_ids=ids).logits
    peft_model = PeftModel.from_pretrained(build_tiny_model("llama"), str(tmp_path / "lora"))
    with torch.no_grad():
        got = peft_model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=0, atol=0)


def test_wrong_base_model_is_refused(tmp_path: Path) -> None:
    save_artifact(_trained_like({"type": "post_block"}), tmp_path)
    with pytest.raises(ArtifactError, match=r"architecture=llama.*architecture=gpt2"):
        load_artifact(build_tiny_model("gpt2"), tmp_path)
    with pytest.raises(ArtifactError, match=r"num_layers=3.*num_layers=2"):
        from transformers import LlamaForCausalLM

        from steering_core.model.loading import tiny_config

        config = tiny_config("llama")
        config.num_hidden_layers = 2
        load_artifact(LlamaForCausalLM(config), tmp_path)
    with pytest.raises(ArtifactError, match="content hash"):
        load_artifact(build_tiny_model("llama", seed=1), tmp_path, check_content_hash=True)


def test_corrupted_tensors_give_a_clear_error(tmp_path: Path) -> None:
    save_artifact(_trained_like({"type": "post_block"}), tmp_path)
    path = tmp_path / "adapter_model.safetensors"
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ArtifactError, match="not a readable safetensors file"):
        load_artifact(build_tiny_model("llama"), tmp_path)


def test_shape_mismatch_gives_a_clear_error(tmp_path: Path) -> None:
    save_artifact(_trained_like({"type": "post_block"}), tmp_path)
    config = json.loads((tmp_path / "steering_config.json").read_text())
    config["method"]["adapter"] = {"kind": "nonlinear", "rank": 4}
    (tmp_path / "steering_config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"shape \(8, 32\), expected \(4, 32\)"):
        load_artifact(build_tiny_model("llama"), tmp_path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "not valid JSON"),
        ('{"format_version": 2}', "format_version"),
        ('{"format_version": 1, "method": {"type": "reinforcement"}}', "method"),
    ],
)
def test_bad_config_file_gives_a_clear_error(tmp_path: Path, content: str, message: str) -> None:
    (tmp_path / "steering_config.json").write_text(content)
    with pytest.raises(ArtifactError, match=message):
        read_artifact_config(tmp_path)


def test_missing_artifact_gives_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match=r"steering_config\.json is missing"):
        load_artifact(build_tiny_model("llama"), tmp_path)


def test_cli_style_error_output_is_one_line(tmp_path: Path) -> None:
    """A user loading a broken artifact from a script sees the message, not only a traceback."""
    (tmp_path / "steering_config.json").write_text("{}")
    script = (
        "import sys\nfrom steering_core.errors import SteeringUserError\n"
        "from steering_core.artifact.store import read_artifact_config\n"
        "try:\n    read_artifact_config(sys.argv[1])\n"
        "except SteeringUserError as exc:\n    print(exc); sys.exit(2)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=Path(__file__).resolve().parents[3],
    )
    assert result.returncode == 2
    assert "method: Field required" in result.stdout and "base_model" in result.stdout
