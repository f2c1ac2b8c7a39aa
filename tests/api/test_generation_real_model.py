"""Steered generation on SmolLM2-135M-Instruct through real HTTP: the adapter changes the
text, the text equals the library's in-process greedy output, and streaming gives the same."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steering_core.artifact.store import load_artifact, save_artifact
from steering_core.evaluation.greedy import generate_greedy
from steering_core.model.loading import load_model, load_tokenizer
from steering_core.serving.requests import encode_chat
from steering_core.steering.attach import attach_method
from tests.api.conftest import running_api
from tests.api.helpers import register_adapter
from tests.steering_core.helpers import randomize_adapters

pytestmark = [pytest.mark.slow, pytest.mark.real_model]
MODEL = "smollm2-135m-instruct"
MESSAGES = [{"role": "user", "content": "Name a primary colour."}]


def test_smollm2_steered_chat_equals_the_library(tmp_path: Path) -> None:
    attached = attach_method(
        load_model(MODEL), {"type": "post_block", "adapter": {"kind": "vector"}}
    )
    randomize_adapters(attached, seed=0, scale=0.5)
    artifact = tmp_path / "artifact"
    save_artifact(attached, artifact, base_model_id=MODEL)
    tokenizer = load_tokenizer(MODEL)
    prompt = encode_chat(tokenizer, MESSAGES)
    library = generate_greedy(
        load_artifact(load_model(MODEL), artifact).model, tokenizer, [prompt], max_new_tokens=12
    )[0]
    plain = generate_greedy(load_model(MODEL), tokenizer, [prompt], max_new_tokens=12)[0]
    assert library != plain

    (tmp_path / "api").mkdir()
    with running_api(tmp_path / "api", models=[MODEL]) as api:
        files = {p.name: p.read_bytes() for p in artifact.iterdir() if p.is_file()}
        row = register_adapter(api, "colour", files=files, base_model=MODEL)
        body = {"messages": MESSAGES, "max_tokens": 12, "temperature": 0}
        steered = api.client.post("/v1/chat/completions", json={"model": row["id"], **body})
        assert steered.status_code == 200, steered.text
        assert steered.json()["choices"][0]["message"]["content"] == library
        base = api.client.post("/v1/chat/completions", json={"model": MODEL, **body}).json()
        assert base["choices"][0]["message"]["content"] == plain
        streamed = api.client.post(
            "/v1/chat/completions", json={"model": row["id"], "stream": True, **body}
        )
        chunks = [
            json.loads(line[6:])
            for line in streamed.text.splitlines()
            if line.startswith("data: {")
        ]
        assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == library
        again = api.client.post("/v1/chat/completions", json={"model": row["id"], **body})
        assert again.headers["x-steer-model-cache"] == "hit"
