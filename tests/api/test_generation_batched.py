"""Batched generation over real HTTP: concurrent requests with different adapters, the base
model and several strengths share forward passes and each gets what it gets alone; several
adapters in one request; a full model as its own copy; a client that leaves frees its row."""

from __future__ import annotations

import json
import re
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest

from steering_core.artifact.store import read_artifact_config
from steering_core.model.loading import load_tokenizer
from steering_core.serving.requests import encode_text
from tests.api.conftest import running_api
from tests.api.helpers import Api, assert_error, register_adapter
from tests.steering_core.serving_helpers import MODEL, make_artifacts, reference

COMPLETE = "/v1/completions"
MAX_TOKENS = 8
MIX = [
    ("vector", 1.0),
    ("linear", 0.5),
    ("nonlinear", 1.5),
    ("reft", 1.0),
    ("lora", 1.0),
    ("joint", 1.0),
    (None, 1.0),
    ("post_block", 0.0),
    ("post_block", 1.5),
]
PROMPTS = [
    " ".join(["7+3=", "11*2=", "(4-1)=", "5+5+5="][: 1 + i % 4]) * (1 + i // 4) for i in range(9)
]


def _files(artifact: Path) -> dict[str, bytes]:
    return {
        str(path.relative_to(artifact)): path.read_bytes()
        for path in sorted(artifact.rglob("*"))
        if path.is_file()
    }


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("batched")
    (root / "artifacts").mkdir()
    (root / "api").mkdir()
    artifacts = make_artifacts(root / "artifacts")
    with running_api(root / "api") as api:
        for name, artifact in artifacts.items():
            method = read_artifact_config(artifact).method.model_dump()
            register_adapter(api, name, files=_files(artifact), method=method)
        yield api, artifacts


def _metric(api: Api, name: str, phase: str) -> float:
    text = api.client.get("/metrics").text
    match = re.search(rf'^{name}_total{{phase="{phase}"}} (\S+)$', text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def _complete(api: Api, body: dict[str, Any]) -> dict[str, Any]:
    with httpx.Client(base_url=api.base_url, timeout=120) as client:
        response = client.post(COMPLETE, json=body)
    assert response.status_code == 200, response.text
    return response.json()


def _body(name: str | None, strength: float, prompt: str) -> dict[str, Any]:
    return {
        "model": f"{name}@1" if name else MODEL,
        "prompt": prompt,
        "max_tokens": MAX_TOKENS,
        "temperature": 0,
        "steering_strength": strength,
    }


def test_concurrent_requests_share_forwards_and_each_gets_its_alone_tokens(served: Any) -> None:
    api, artifacts = served
    bodies = [_body(name, s, prompt) for (name, s), prompt in zip(MIX, PROMPTS, strict=True)]
    alone = [_complete(api, body) for body in bodies]  # one at a time: batch of one
    decode_passes = _metric(api, "steer_generation_forward_passes", "decode")
    decode_rows = _metric(api, "steer_generation_rows", "decode")
    with ThreadPoolExecutor(max_workers=len(bodies)) as pool:
        together = list(pool.map(lambda body: _complete(api, body), bodies))
    passes = _metric(api, "steer_generation_forward_passes", "decode") - decode_passes
    rows = _metric(api, "steer_generation_rows", "decode") - decode_rows
    assert rows / passes >= 3, (rows, passes)  # rows rode together, not one after another

    tokenizer = load_tokenizer(MODEL)
    for (name, strength), prompt, one, many in zip(MIX, PROMPTS, alone, together, strict=True):
        text = many["choices"][0]["text"]
        assert text == one["choices"][0]["text"], (name, strength)
        assert many["usage"] == one["usage"]
        ids = encode_text(tokenizer, prompt)
        steps = many["usage"]["completion_tokens"]
        wanted = [(artifacts[name], strength)] if name else []
        tokens, logits = reference(wanted, ids, steps)
        # the tokens agree up to the first step whose top-2 margin is a near-tie (<= 1e-3),
        # where batched and batch-1 matmuls may pick either; all of them when there is none
        margins = [float(lg.topk(2).values[0] - lg.topk(2).values[1]) for lg in logits]
        sure = next((i for i, margin in enumerate(margins) if margin <= 1e-3), len(margins))
        expected = tokenizer.decode(tokens[: sure + 1], skip_special_tokens=True)
        if sure == len(margins):
            assert text == expected, (name, strength)
        else:
            assert text.startswith(tokenizer.decode(tokens[:sure], skip_special_tokens=True))


def test_a_joint_adapter_serves_either_half_alone(served: Any) -> None:
    api, artifacts = served
    tokenizer = load_tokenizer(MODEL)
    prompt = PROMPTS[2]
    texts = {}
    for mode in ("all", "lora_only", "adapter_only"):
        body = {**_body("joint", 1.0, prompt), "inference_mode": mode}
        texts[mode] = _complete(api, body)["choices"][0]["text"]
        tokens, _ = reference([(artifacts["joint"], 1.0)], encode_text(tokenizer, prompt), 8, mode)
        assert texts[mode] == tokenizer.decode(tokens, skip_special_tokens=True), mode
    assert len(set(texts.values())) == 3  # each half changes the output on its own
    refused = api.client.post(
        COMPLETE, json={**_body("lora", 1.0, prompt), "inference_mode": "lora_only"}
    )
    assert_error(refused, 400, param="inference_mode")


def test_several_adapters_in_one_request_add_up(served: Any) -> None:
    api, artifacts = served
    steering = [{"adapter": "vector@1", "strength": 0.5}, {"adapter": "nonlinear", "strength": 1}]
    body = {"model": MODEL, "prompt": PROMPTS[2], "max_tokens": MAX_TOKENS, "temperature": 0}
    answer = _complete(api, {**body, "steering": steering})
    ids = encode_text(load_tokenizer(MODEL), PROMPTS[2])
    tokens, _ = reference(
        [(artifacts["vector"], 0.5), (artifacts["nonlinear"], 1.0)],
        ids,
        answer["usage"]["completion_tokens"],
    )
    text = load_tokenizer(MODEL).decode(tokens, skip_special_tokens=True)
    assert answer["choices"][0]["text"] == text
    # an adapter as `model` plus more adapters: the model's adapter at steering_strength
    both = _complete(
        api,
        {
            **body,
            "model": "vector@1",
            "steering_strength": 0.5,
            "steering": [{"adapter": "nonlinear@1"}],
        },
    )
    assert both["choices"][0]["text"] == text


@pytest.mark.parametrize(
    ("steering", "status", "mentions"),
    [
        ([{"adapter": "nope@1"}], 404, "does not exist"),
        ([{"adapter": "full@1"}], 400, "full fine-tuned"),
        ([{"adapter": "vector@1", "strength": 11}], 400, "strength"),
        ([{"adapter": "vector@1", "weight": 1}], 400, "weight"),
        ([{"adapter": "vector@1"}] * 9, 400, "steering"),
    ],
)
def test_bad_steering_entries_are_refused_naming_them(
    served: Any, steering: list[dict[str, Any]], status: int, mentions: str
) -> None:
    api, _ = served
    body = {"model": MODEL, "prompt": "1+1=", "max_tokens": 2, "steering": steering}
    response = api.client.post(COMPLETE, json=body)
    error = assert_error(response, status)
    assert error["param"].startswith("steering"), error
    assert mentions in error["message"], error


def test_adapters_of_another_base_model_are_refused(served: Any) -> None:
    api, artifacts = served
    register_adapter(
        api,
        "gemma-vector",
        files=_files(artifacts["vector"]),
        base_model="tiny-gemma3_text",
        method={"type": "post_block"},
    )
    body = {"model": MODEL, "prompt": "1+1=", "steering": [{"adapter": "gemma-vector@1"}]}
    error = assert_error(api.client.post(COMPLETE, json=body), 400, param="steering.0.adapter")
    assert "share its base model" in error["message"]
    full_plus = {"model": "full@1", "prompt": "1+1=", "steering": [{"adapter": "vector@1"}]}
    assert_error(api.client.post(COMPLETE, json=full_plus), 400, param="steering.0.adapter")


def test_a_full_model_is_served_as_its_own_copy(served: Any) -> None:
    api, artifacts = served
    answer = _complete(
        api, {"model": "full@1", "prompt": PROMPTS[1], "max_tokens": 6, "temperature": 0}
    )
    ids = encode_text(load_tokenizer(MODEL), PROMPTS[1])
    tokens, _ = reference([(artifacts["full"], 1.0)], ids, answer["usage"]["completion_tokens"])
    assert answer["choices"][0]["text"] == load_tokenizer(MODEL).decode(
        tokens, skip_special_tokens=True
    )
    base = _complete(api, {"model": MODEL, "prompt": PROMPTS[1], "max_tokens": 6, "temperature": 0})
    assert base["choices"][0]["text"] != answer["choices"][0]["text"]


def test_a_stream_whose_client_leaves_frees_its_row(served: Any) -> None:
    api, _ = served
    body = {"model": "vector@1", "prompt": "1+", "max_tokens": 250, "stream": True}
    with (
        httpx.Client(base_url=api.base_url, timeout=60) as client,
        client.stream("POST", COMPLETE, json=body) as response,
    ):
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: ") and json.loads(line[6:])["choices"][0]["text"]:
                break  # the row is decoding; now leave
    deadline = time.monotonic() + 10
    in_flight = None
    while time.monotonic() < deadline:
        match = re.search(
            r"^steer_generation_requests_in_flight (\S+)$",
            api.client.get("/metrics").text,
            re.MULTILINE,
        )
        in_flight = float(match.group(1)) if match else None
        if in_flight == 0:
            break
        time.sleep(0.1)
    assert in_flight == 0
    decoded = _metric(api, "steer_generation_rows", "decode")
    time.sleep(0.5)
    assert _metric(api, "steer_generation_rows", "decode") == decoded  # nothing decodes now


def _in_flight(api: Api) -> float | None:
    text = api.client.get("/metrics").text
    match = re.search(r"^steer_generation_requests_in_flight (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else None


def test_a_plain_request_whose_client_leaves_frees_its_row(served: Any) -> None:
    api, _ = served
    max_tokens = 250
    body = json.dumps({"model": "vector@1", "prompt": "1+", "max_tokens": max_tokens}).encode()
    host, port = api.base_url.removeprefix("http://").split(":")
    decoded = _metric(api, "steer_generation_rows", "decode")
    with socket.create_connection((host, int(port)), timeout=30) as connection:
        connection.sendall(
            b"POST " + COMPLETE.encode() + b" HTTP/1.1\r\nHost: test\r\n"
            b"Content-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        deadline = time.monotonic() + 30
        while _in_flight(api) != 1 and time.monotonic() < deadline:
            time.sleep(0.005)
        assert _in_flight(api) == 1
    # the connection is closed: the row leaves the batch long before its 250 tokens
    deadline = time.monotonic() + 10
    while _in_flight(api) != 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert _in_flight(api) == 0
    assert _metric(api, "steer_generation_rows", "decode") - decoded < max_tokens / 2
