"""The real pretrained models from their PyPI packages (converted once to safetensors)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from steering_core.artifact.store import save_artifact
from steering_core.model.catalogue import model_dimensions
from steering_core.model.loading import load_model, load_tokenizer, resolve_model_path
from steering_core.steering.attach import attach_method

pytestmark = [pytest.mark.slow, pytest.mark.real_model]

SMOLLM = "smollm2-135m-instruct"
ROOT = Path(__file__).resolve().parents[3]


def _chat_ids(tokenizer, text: str) -> torch.Tensor:
    encoded = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, return_tensors="pt"
    )
    return encoded if isinstance(encoded, torch.Tensor) else encoded["input_ids"]


@pytest.fixture(scope="module")
def smollm():
    return load_model(SMOLLM), load_tokenizer(SMOLLM)


def test_smollm2_is_what_the_catalogue_says(smollm) -> None:
    model, tokenizer = smollm
    assert model.config.model_type == "llama"
    assert (model.config.hidden_size, model.config.num_hidden_layers) == (576, 30)
    # the API checks jobs against the catalogue's table: it must agree with the real model
    assert model_dimensions(SMOLLM) == (30, 576)
    assert model_dimensions(str(resolve_model_path(SMOLLM))) == (30, 576)
    assert tokenizer.eos_token == "<|im_end|>"


def test_smollm2_generates_sensible_text(smollm) -> None:
    model, tokenizer = smollm
    ids = _chat_ids(tokenizer, "What is the capital of France?")
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=12, do_sample=False)
    answer = tokenizer.decode(out[0, ids.shape[1] :], skip_special_tokens=True)
    assert "Paris" in answer


def test_smollm2_identity_at_init_and_round_trip(smollm, tmp_path: Path) -> None:
    model, tokenizer = smollm
    ids = _chat_ids(tokenizer, "Name three colours.")
    with torch.no_grad():
        base = model(input_ids=ids).logits.clone()
    attached = attach_method(model, {"type": "post_block"})
    try:
        with torch.no_grad():
            assert torch.equal(attached.model(input_ids=ids).logits, base)
            generator = torch.Generator().manual_seed(0)
            for _, param in attached.trainable_named_parameters():
                param.add_(torch.randn(param.shape, generator=generator) * 1e-2)
            steered = attached.model(input_ids=ids).logits
        assert not torch.equal(steered, base)
        config = save_artifact(attached, tmp_path / "artifact", base_model_id=SMOLLM)
        assert config.parameters.trainable == 30 * 2 * 576 * 8
        torch.save(ids, tmp_path / "ids.pt")
        script = (
            "import sys, torch\n"
            "from steering_core.artifact.store import load_artifact\n"
            "from steering_core.model.loading import load_model\n"
            f"model = load_model({SMOLLM!r})\n"
            "attached = load_artifact(model, sys.argv[1], check_content_hash=True)\n"
            "with torch.no_grad():\n"
            "    logits = attached.model(input_ids=torch.load(sys.argv[2])).logits\n"
            "torch.save(logits, sys.argv[3])\n"
        )
        subprocess.run(
            [
                sys.executable,
                "-c",
                script,
                str(tmp_path / "artifact"),
                str(tmp_path / "ids.pt"),
                str(tmp_path / "out.pt"),
            ],
            check=True,
            cwd=ROOT,
        )
        assert torch.equal(torch.load(tmp_path / "out.pt"), steered)
    finally:
        from steering_core.steering.site_steering import detach_steering

        detach_steering(model)


def test_gemma3_270m_loads_steers_and_generates() -> None:
    model = load_model("gemma-3-270m")
    tokenizer = load_tokenizer("gemma-3-270m")
    assert model.config.model_type == "gemma3_text"
    layers, hidden = model.config.num_hidden_layers, model.config.hidden_size
    assert model_dimensions("gemma-3-270m") == (layers, hidden)
    ids = tokenizer("Q: What is the capital of France?\nA:", return_tensors="pt").input_ids
    with torch.no_grad():
        base = model(input_ids=ids).logits.clone()
        out = model.generate(ids, max_new_tokens=8, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, ids.shape[1] :])
    attached = attach_method(model, {"type": "post_block", "site": {"name": "mlp_output"}})
    with torch.no_grad():
        assert torch.equal(attached.model(input_ids=ids).logits, base)
