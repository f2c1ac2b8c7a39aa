"""Per-row generation options in the batching engine: logit bias, frequency and presence
penalties (OpenAI's formula, written out here as the reference), log-probabilities with the
most likely alternatives; rows with and without options share a batch and each gets what it
gets alone."""

from __future__ import annotations

from collections import Counter

import pytest
import torch
from transformers import DynamicCache

from steering_core.model.loading import load_model, load_tokenizer
from steering_core.serving import BatchEngine
from steering_core.serving.requests import GenerationParams, token_bytes, token_text
from tests.steering_core.serving_helpers import MODEL

STEPS = 12


@pytest.fixture(scope="module")
def engine():
    engine = BatchEngine(load_model(MODEL), load_tokenizer(MODEL), max_batch=8)
    yield engine
    engine.close()


def _prompt(seed: int, length: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 120, (length,), generator=generator).tolist()


@torch.no_grad()
def _alone(
    prompt: list[int],
    steps: int,
    bias: dict[int, float] | None = None,
    frequency: float = 0.0,
    presence: float = 0.0,
) -> tuple[list[int], list[torch.Tensor], list[torch.Tensor]]:
    """Greedy tokens, each step's logits and its adjusted logits, one request alone:
    ``logits[j] += bias[j]; logits[j] -= count[j] * frequency + (count[j] > 0) * presence``."""
    model = load_model(MODEL)
    cache = DynamicCache()
    tokens: list[int] = []
    raw: list[torch.Tensor] = []
    adjusted: list[torch.Tensor] = []
    feed = list(prompt)
    for _ in range(steps):
        logits = model(input_ids=torch.tensor([feed]), cache=cache, use_cache=True).logits
        raw.append(logits[0, -1].float())
        row = raw[-1].clone()
        for token, value in (bias or {}).items():
            row[token] += value
        for token, count in Counter(tokens).items():
            row[token] -= count * frequency + presence
        adjusted.append(row)
        tokens.append(int(row.argmax()))
        if tokens[-1] == 2:  # tiny-llama's EOS
            break
        feed = [tokens[-1]]
    return tokens, raw, adjusted


def test_options_apply_per_row_in_one_batch(engine: BatchEngine) -> None:
    prompts = [_prompt(i, 4 + 3 * i) for i in range(4)]
    plain_tokens, _, _ = _alone(prompts[0], STEPS)
    favourite = plain_tokens[0]
    cases = [
        (GenerationParams(max_tokens=STEPS, temperature=0), {}),
        (
            GenerationParams(max_tokens=STEPS, temperature=0, logit_bias=((favourite, -100.0),)),
            {"bias": {favourite: -100.0}},
        ),
        (
            GenerationParams(max_tokens=STEPS, temperature=0, frequency_penalty=2.0),
            {"frequency": 2.0},
        ),
        (
            GenerationParams(
                max_tokens=STEPS, temperature=0, presence_penalty=1.5, frequency_penalty=-0.5
            ),
            {"presence": 1.5, "frequency": -0.5},
        ),
    ]
    handles = [
        engine.submit(prompt, params, keep_logits=True)
        for prompt, (params, _) in zip(prompts, cases, strict=True)
    ]
    results = [h.future.result(timeout=60) for h in handles]
    assert engine.peak_rows >= 3  # they shared forwards
    for index, (prompt, (_, options), handle, result) in enumerate(
        zip(prompts, cases, handles, results, strict=True)
    ):
        want_tokens, want_raw, want_adjusted = _alone(prompt, STEPS, **options)
        raw = handle.logits or []
        assert len(raw) == len(want_tokens) == result.completion_tokens, index
        for step, (got, want) in enumerate(zip(raw, want_raw, strict=True)):
            # the same logits at every step: the same tokens were chosen and fed back
            assert float((got - want).abs().max()) < 1e-4, (index, step)
        drawn = [int(logits.argmax()) for logits in raw]  # the raw logits, before adjusting
        for step, want in enumerate(want_adjusted):
            top = torch.topk(want, 2).values
            if float(top[0] - top[1]) > 1e-3:
                got = _adjusted_argmax(raw[step], want_tokens[:step], options)
                assert got == want_tokens[step], (index, step)
        if index == 1:
            assert favourite not in want_tokens  # the bias did act
        if index == 0:
            assert drawn == want_tokens


def _adjusted_argmax(raw: torch.Tensor, before: list[int], options: dict) -> int:
    row = raw.clone()
    for token, value in options.get("bias", {}).items():
        row[token] += value
    for token, count in Counter(before).items():
        row[token] -= count * options.get("frequency", 0.0) + options.get("presence", 0.0)
    return int(row.argmax())


def test_logprobs_are_the_adjusted_distribution_with_its_top_alternatives(
    engine: BatchEngine,
) -> None:
    prompt = _prompt(9, 6)
    bias = {7: 3.0}
    params = GenerationParams(max_tokens=6, temperature=0, logprobs=3, logit_bias=((7, 3.0),))
    result = engine.generate(prompt, params)
    tokens, _, adjusted = _alone(prompt, 6, bias=bias)
    assert result.logprobs is not None
    eos_free = [t for t in tokens if t != 2]
    assert [lp.token for lp in result.logprobs] == eos_free
    for entry, logits in zip(result.logprobs, adjusted, strict=False):
        reference = torch.log_softmax(logits, dim=-1)
        assert abs(entry.logprob - float(reference[entry.token])) < 1e-4
        assert len(entry.top) == 3
        assert entry.top[0][0] == entry.token  # greedy: the chosen token is the most likely
        assert [value for _, value in entry.top] == sorted(
            (value for _, value in entry.top), reverse=True
        )
        assert abs(entry.top[1][1] - float(torch.topk(reference, 2).values[1])) < 1e-4
    assert engine.generate(prompt, GenerationParams(max_tokens=6, temperature=0)).logprobs is None


def test_logprobs_of_a_text_cut_at_a_stop_string_cover_that_text(engine: BatchEngine) -> None:
    prompt = _prompt(11, 5)
    whole = engine.generate(prompt, GenerationParams(max_tokens=16, temperature=0, logprobs=0))
    assert len(whole.text) > 4
    stop = whole.text[3:5]
    cut = engine.generate(
        prompt, GenerationParams(max_tokens=16, temperature=0, logprobs=0, stop=(stop,))
    )
    assert cut.text == whole.text[: whole.text.index(stop)]
    assert cut.logprobs is not None and whole.logprobs is not None
    covered = engine.tokenizer.decode([lp.token for lp in cut.logprobs])
    assert covered.startswith(cut.text)
    assert len(cut.logprobs) < len(whole.logprobs)


def test_streamed_pieces_carry_the_logprobs_of_their_tokens(engine: BatchEngine) -> None:
    prompt = _prompt(12, 5)
    params = GenerationParams(max_tokens=10, temperature=0, logprobs=1)
    pieces: list[tuple[str, tuple]] = []
    result = engine.submit(
        prompt, params, on_text=lambda piece, logprobs: pieces.append((piece, logprobs))
    ).future.result(60)
    assert "".join(piece for piece, _ in pieces) == result.text
    assert [lp for _, logprobs in pieces for lp in logprobs] == list(result.logprobs or ())


def test_a_token_that_is_part_of_a_character_keeps_its_exact_bytes() -> None:
    tokenizer = load_tokenizer(MODEL)
    ids = tokenizer("é€a", add_special_tokens=False)["input_ids"]
    assert b"".join(token_bytes(tokenizer, token) for token in ids) == "é€a".encode()
    assert [token_text(tokenizer, token) for token in ids] == [
        "bytes:\\xc3",
        "bytes:\\xa9",
        "bytes:\\xe2",
        "bytes:\\x82",
        "bytes:\\xac",
        "a",
    ]
