"""Generation options through the official ``openai`` package, unchanged: a streamed completion
with ``stream_options.include_usage``, ``logprobs`` with ``top_logprobs``, ``n`` choices
(seeded, streamed and not), penalties and ``logit_bias``, on chat and plain completions."""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest

from steering_core.model.loading import load_tokenizer
from tests.api.conftest import running_api

MODEL = "tiny-llama"
MESSAGES = [{"role": "user", "content": "Count: 1, 2, 3"}]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[openai.OpenAI]:
    with running_api(tmp_path_factory.mktemp("openai-generation")) as api:
        yield openai.OpenAI(base_url=f"{api.base_url}/v1", api_key="unused", max_retries=0)


def test_a_stream_with_include_usage_ends_with_the_usage(client: openai.OpenAI) -> None:
    whole = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=12, temperature=0
    )
    stream = client.chat.completions.create(
        model=MODEL,
        messages=MESSAGES,
        max_tokens=12,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    *content_chunks, last = chunks
    assert last.choices == [] and last.usage is not None
    assert last.usage.completion_tokens == whole.usage.completion_tokens
    assert last.usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(chunk.usage is None for chunk in content_chunks)
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == whole.choices[0].message.content
    assert content_chunks[-1].choices[0].finish_reason == whole.choices[0].finish_reason


def test_chat_logprobs_with_top_alternatives(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=6, temperature=0, logprobs=True, top_logprobs=3
    )
    content = answer.choices[0].logprobs.content
    assert 1 <= len(content) <= answer.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        ranked = [alternative.logprob for alternative in entry.top_logprobs]
        assert ranked == sorted(ranked, reverse=True)
        assert entry.top_logprobs[0].token == entry.token  # greedy: the most likely one
        if not entry.token.startswith("bytes:"):  # else only part of a character
            assert entry.bytes == list(entry.token.encode())
    joined = b"".join(bytes(entry.bytes) for entry in content)
    assert joined.decode(errors="replace") == answer.choices[0].message.content
    plain = client.chat.completions.create(
        model=MODEL, messages=MESSAGES, max_tokens=6, temperature=0
    )
    assert plain.choices[0].logprobs is None


def test_completion_logprobs_in_the_legacy_shape(client: openai.OpenAI) -> None:
    answer = client.completions.create(
        model=MODEL, prompt="1+1=", max_tokens=5, temperature=0, logprobs=2
    )
    logprobs = answer.choices[0].logprobs
    assert len(logprobs.tokens) == len(logprobs.token_logprobs) == len(logprobs.text_offset)
    assert logprobs.text_offset[0] == 0
    assert all(len(top) == 2 for top in logprobs.top_logprobs)  # distinct keys per token
    assert all(value <= 0 for value in logprobs.token_logprobs)


def test_n_choices_each_sampled_with_its_own_seed(client: openai.OpenAI) -> None:
    def ask() -> openai.types.chat.ChatCompletion:
        return client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=10, temperature=1.0, seed=7, n=2
        )

    first, again = ask(), ask()
    texts = [choice.message.content for choice in first.choices]
    assert [choice.index for choice in first.choices] == [0, 1]
    assert texts == [choice.message.content for choice in again.choices]  # seeded
    assert texts[0] != texts[1]  # seed + i: the choices differ
    singles = [
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, max_tokens=10, temperature=1.0, seed=seed
        )
        for seed in (7, 8)
    ]
    assert texts == [single.choices[0].message.content for single in singles]
    assert first.usage.completion_tokens == sum(s.usage.completion_tokens for s in singles)
    assert first.usage.prompt_tokens == singles[0].usage.prompt_tokens


def test_n_streamed_choices_arrive_by_index(client: openai.OpenAI) -> None:
    stream = client.completions.create(
        model=MODEL, prompt="1+1=", max_tokens=6, temperature=1.0, seed=3, n=2, stream=True
    )
    texts = {0: "", 1: ""}
    finished = set()
    for chunk in stream:
        for choice in chunk.choices:
            texts[choice.index] += choice.text
            if choice.finish_reason:
                finished.add(choice.index)
    assert finished == {0, 1}
    whole = client.completions.create(
        model=MODEL, prompt="1+1=", max_tokens=6, temperature=1.0, seed=3, n=2
    )
    assert [texts[0], texts[1]] == [choice.text for choice in whole.choices]


def test_logit_bias_and_penalties(client: openai.OpenAI) -> None:
    tokenizer = load_tokenizer(MODEL)
    (token,) = tokenizer("a", add_special_tokens=False)["input_ids"]
    forced = client.completions.create(
        model=MODEL, prompt="1+1=", max_tokens=5, temperature=0, logit_bias={str(token): 100}
    )
    assert forced.choices[0].text == "aaaaa"
    # Two tokens raised far above the rest: alone, greedy repeats whichever is a little higher;
    # a frequency penalty makes a token it has drawn cost more than the other, so both appear.
    (other,) = tokenizer("b", add_special_tokens=False)["input_ids"]
    pair = {str(token): 100, str(other): 100}
    plain = client.completions.create(
        model=MODEL, prompt="1+1=", max_tokens=6, temperature=0, logit_bias=pair
    )
    assert plain.choices[0].text in ("aaaaaa", "bbbbbb")
    penalised = client.completions.create(
        model=MODEL,
        prompt="1+1=",
        max_tokens=6,
        temperature=0,
        logit_bias=pair,
        frequency_penalty=2.0,
    )
    assert set(penalised.choices[0].text) == {"a", "b"}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=MODEL, messages=MESSAGES, response_format={"type": "json_object"}
        )
    assert "response_format" in str(refused.value)


def test_streamed_chunks_carry_their_tokens_logprobs(client: openai.OpenAI) -> None:
    options = {"model": MODEL, "messages": MESSAGES, "max_tokens": 8, "temperature": 0}
    whole = client.chat.completions.create(**options, logprobs=True, top_logprobs=1)
    stream = client.chat.completions.create(**options, logprobs=True, top_logprobs=1, stream=True)
    streamed = [
        entry.token
        for chunk in stream
        for choice in chunk.choices
        if choice.logprobs is not None
        for entry in choice.logprobs.content or []
    ]
    assert streamed and streamed == [entry.token for entry in whole.choices[0].logprobs.content]
