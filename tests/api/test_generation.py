"""/v1/chat/completions and /v1/completions over real HTTP, with a real (tiny) trained-shape
adapter: steered text equals the library's in-process greedy text, streaming, the model cache,
tenant isolation, and every bad request a 4xx naming its field."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch

from steering_core.artifact.store import load_artifact, save_artifact
from steering_core.evaluation.greedy import generate_greedy
from steering_core.model.loading import load_model, load_tokenizer
from steering_core.serving.requests import encode_chat, encode_text
from steering_core.steering.attach import attach_method
from tests.api.helpers import Api, assert_error, register_adapter
from tests.steering_core.helpers import randomize_adapters

CHAT = "/v1/chat/completions"
COMPLETE = "/v1/completions"
MESSAGES = [{"role": "user", "content": "2+2="}]


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    attached = attach_method(load_model("tiny-llama"), {"type": "post_block"})
    randomize_adapters(attached, seed=5, scale=2.0)
    out = tmp_path_factory.mktemp("artifact") / "adapter"
    save_artifact(attached, out, base_model_id="tiny-llama")
    return out


@pytest.fixture
def with_adapter(api: Api, artifact: Path) -> tuple[Api, str]:
    files = {p.name: p.read_bytes() for p in artifact.iterdir() if p.is_file()}
    row = register_adapter(api, "steered", files=files)
    return api, row["id"]


def _in_process(artifact: Path | None, prompt_ids: Callable, n: int = 16) -> str:
    model, tokenizer = load_model("tiny-llama"), load_tokenizer("tiny-llama")
    if artifact is not None:
        model = load_artifact(model, artifact).model
    return generate_greedy(model, tokenizer, [prompt_ids(tokenizer)], max_new_tokens=n)[0]


def test_chat_with_an_adapter_equals_the_library_and_differs_from_the_base(
    with_adapter: tuple[Api, str], artifact: Path
) -> None:
    api, adapter_id = with_adapter
    body = {"messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    steered = api.client.post(CHAT, json={"model": adapter_id, **body})
    assert steered.status_code == 200, steered.text
    answer = steered.json()
    assert answer["object"] == "chat.completion" and answer["model"] == adapter_id
    choice = answer["choices"][0]
    assert choice["message"]["role"] == "assistant"
    assert choice["finish_reason"] in ("stop", "length")
    usage = answer["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    base = api.client.post(CHAT, json={"model": "tiny-llama", **body}).json()
    library = _in_process(artifact, lambda t: encode_chat(t, MESSAGES))
    assert choice["message"]["content"] == library
    assert base["choices"][0]["message"]["content"] == _in_process(
        None, lambda t: encode_chat(t, MESSAGES)
    )
    assert choice["message"]["content"] != base["choices"][0]["message"]["content"]
    # by name@version too, and strength 0 is the base model
    off = api.client.post(CHAT, json={"model": "steered@1", "steering_strength": 0, **body})
    assert (
        off.json()["choices"][0]["message"]["content"] == base["choices"][0]["message"]["content"]
    )


def test_completions_and_the_model_cache(with_adapter: tuple[Api, str], artifact: Path) -> None:
    api, adapter_id = with_adapter
    body = {"model": adapter_id, "prompt": "3+4=", "max_tokens": 12, "temperature": 0}
    first = api.client.post(COMPLETE, json=body)
    second = api.client.post(COMPLETE, json=body)
    assert first.status_code == second.status_code == 200, first.text
    assert first.headers["x-steer-model-cache"] == "miss"
    assert second.headers["x-steer-model-cache"] == "hit"  # not loaded again
    assert first.json()["object"] == "text_completion"
    text = first.json()["choices"][0]["text"]
    assert text == second.json()["choices"][0]["text"]
    assert text == _in_process(artifact, lambda t: encode_text(t, "3+4="), n=12)


def _events(response: httpx.Response) -> list:
    lines = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


def test_streaming_chat_and_completion(with_adapter: tuple[Api, str]) -> None:
    api, adapter_id = with_adapter
    body = {"model": adapter_id, "messages": MESSAGES, "max_tokens": 16, "temperature": 0}
    whole = api.client.post(CHAT, json=body).json()["choices"][0]["message"]["content"]
    response = api.client.post(CHAT, json={**body, "stream": True})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    chunks = _events(response)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content", "") for c in chunks) == whole
    assert chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")

    plain = {"model": adapter_id, "prompt": "3+4=", "max_tokens": 12, "temperature": 0}
    text = api.client.post(COMPLETE, json=plain).json()["choices"][0]["text"]
    streamed = _events(api.client.post(COMPLETE, json={**plain, "stream": True}))
    assert "".join(c["choices"][0]["text"] for c in streamed) == text


def test_another_tenants_adapter_is_not_found(api: Api, artifact: Path) -> None:
    files = {p.name: p.read_bytes() for p in artifact.iterdir() if p.is_file()}
    theirs = register_adapter(api, "theirs", tenant="someone-else", files=files)
    for model in (theirs["id"], "theirs@1", "theirs"):
        response = api.client.post(CHAT, json={"model": model, "messages": MESSAGES})
        assert_error(response, 404, param="model", code="model_not_found")


@pytest.mark.parametrize(
    ("path", "body", "param"),
    [
        (CHAT, {"model": "tiny-llama"}, "messages"),
        (CHAT, {"model": "tiny-llama", "messages": []}, "messages"),
        (
            CHAT,
            {"model": "tiny-llama", "messages": [{"role": "robot", "content": "x"}]},
            "messages.0.role",
        ),
        (CHAT, {"model": "tiny-llama", "messages": MESSAGES, "temperature": 3}, "temperature"),
        (CHAT, {"model": "tiny-llama", "messages": MESSAGES, "top_p": 0}, "top_p"),
        (CHAT, {"model": "tiny-llama", "messages": MESSAGES, "n": 17}, "n"),
        (
            CHAT,
            {"model": "tiny-llama", "messages": MESSAGES, "presence_penalty": 3},
            "presence_penalty",
        ),
        (CHAT, {"model": "tiny-llama", "messages": MESSAGES, "logit_bias": {"x": 1}}, "logit_bias"),
        (
            CHAT,
            {"model": "tiny-llama", "messages": MESSAGES, "logit_bias": {"5": 101}},
            "logit_bias",
        ),
        (CHAT, {"model": "tiny-llama", "messages": MESSAGES, "top_logprobs": 21}, "top_logprobs"),
        (COMPLETE, {"model": "tiny-llama", "prompt": "a", "logprobs": 6}, "logprobs"),
        (CHAT, {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 0}, "max_tokens"),
        (CHAT, {"model": "tiny-llama", "messages": MESSAGES, "max_tokens": 100000}, "max_tokens"),
        (
            CHAT,
            {"model": "tiny-llama", "messages": MESSAGES, "steering_strength": 99},
            "steering_strength",
        ),
        (
            CHAT,
            {"model": "tiny-llama", "messages": MESSAGES, "stop": ["a", "b", "c", "d", "e"]},
            "stop",
        ),
        (
            CHAT,
            {"model": "tiny-llama", "messages": MESSAGES, "frequency_penaltyy": 1},
            "frequency_penaltyy",
        ),
        (CHAT, {"model": "gpt-4o", "messages": MESSAGES}, "model"),
        (CHAT, {"model": "../registry.db", "messages": MESSAGES}, "model"),
        (COMPLETE, {"model": "tiny-llama", "prompt": ["a", "b"]}, "prompt"),
        (COMPLETE, {"model": "tiny-llama", "prompt": "x" * 5000, "max_tokens": 10}, "prompt"),
    ],
)
def test_bad_requests_name_the_field(shared_api: Api, path: str, body: dict, param: str) -> None:
    response = shared_api.client.post(path, json=body)
    assert response.status_code in (400, 404), response.text
    assert_error(response, response.status_code, param=param)


@pytest.mark.parametrize(
    ("path", "extra", "param", "why"),
    [
        (CHAT, {"response_format": {"type": "json_object"}}, "response_format.type", "free text"),
        (
            CHAT,
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.type",
            "JSON schema",
        ),
        (CHAT, {"tools": [{"type": "function"}]}, "tools", "no tool calling"),
        (CHAT, {"tool_choice": "auto"}, "tool_choice", "no tool calling"),
        (CHAT, {"top_logprobs": 2}, "top_logprobs", "needs logprobs"),
        (CHAT, {"logit_bias": {"100000": 5}}, "logit_bias", "outside tiny-llama's vocabulary"),
        (COMPLETE, {"echo": True}, "echo", "completion only"),
        (COMPLETE, {"suffix": "end"}, "suffix", "no insertion"),
        (COMPLETE, {"best_of": 3}, "best_of", "n choices"),
    ],
)
def test_options_generation_cannot_honour_are_refused_saying_why(
    shared_api: Api, path: str, extra: dict, param: str, why: str
) -> None:
    base = {"messages": MESSAGES} if path == CHAT else {"prompt": "1+1="}
    response = shared_api.client.post(path, json={"model": "tiny-llama", **base, **extra})
    assert_error(response, 400, param=param)
    assert why in response.json()["error"]["message"]


def test_accepted_options_that_change_nothing_here(shared_api: Api) -> None:
    body = {
        "model": "tiny-llama",
        "messages": [{"role": "developer", "content": "Be brief."}, *MESSAGES],
        "max_tokens": 2,
        "response_format": {"type": "text"},
        "stream_options": {"include_usage": True},  # without stream: nothing to add it to
    }
    response = shared_api.client.post(CHAT, json=body)
    assert response.status_code == 200, response.text
    assert response.json()["usage"]["completion_tokens"] >= 1


@pytest.mark.skipif(torch.cuda.is_available(), reason="the check is for a machine without a GPU")
def test_a_gpu_setting_on_a_machine_without_one_is_the_servers_503(
    make_api: Callable[..., Api],
) -> None:
    api = make_api(generation_device="cuda")
    response = api.client.post(CHAT, json={"model": "tiny-llama", "messages": MESSAGES})
    assert_error(response, 503, code="generation_unavailable")
    assert "torch sees no GPU" in response.json()["error"]["message"]
