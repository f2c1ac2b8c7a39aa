"""Serving-side generation: cache, greedy equality with the evaluation path, streaming, stops,
steering strength."""

from __future__ import annotations

from pathlib import Path

import pytest

from steering_core.attach import attach_method
from steering_core.errors import SteeringUserError
from steering_core.evaluate import generate_greedy
from steering_core.inference import (
    GenerationParams,
    ModelCache,
    encode_chat,
    encode_text,
    generate,
    stream,
)
from steering_core.io import save_artifact
from steering_core.models import load_model, load_tokenizer
from tests.steering_core.helpers import randomize_adapters

GREEDY = GenerationParams(max_tokens=24, temperature=0)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    attached = attach_method(load_model("tiny-llama"), {"type": "post_block"})
    randomize_adapters(attached, seed=3, scale=2.0)
    out = tmp_path_factory.mktemp("artifact") / "adapter"
    save_artifact(attached, out, base_model_id="tiny-llama")
    return out


def test_greedy_equals_the_evaluation_path_and_steering_changes_it(artifact: Path) -> None:
    cache = ModelCache(size=2)
    steered, hit = cache.get("tiny-llama", artifact)
    assert not hit
    base, _ = cache.get("tiny-llama")
    prompt = encode_text(steered.tokenizer, "3+4=")
    with_adapter = generate(steered, prompt, GREEDY)
    without = generate(base, prompt, GREEDY)
    assert with_adapter.text != without.text
    assert (
        with_adapter.text
        == generate_greedy(steered.model, steered.tokenizer, [prompt], max_new_tokens=24)[0]
    )
    assert (
        without.text == generate_greedy(base.model, base.tokenizer, [prompt], max_new_tokens=24)[0]
    )
    assert with_adapter.prompt_tokens == len(prompt)
    assert 0 < with_adapter.completion_tokens <= 24
    # strength 0 switches the steering off for that request only
    off = generate(
        steered, prompt, GenerationParams(max_tokens=24, temperature=0, steering_strength=0.0)
    )
    assert off.text == without.text
    assert generate(steered, prompt, GREEDY).text == with_adapter.text


def test_cache_hits_and_evicts_least_recently_used(artifact: Path) -> None:
    cache = ModelCache(size=1)
    first, hit = cache.get("tiny-llama", artifact)
    again, hit_again = cache.get("tiny-llama", artifact)
    assert (hit, hit_again) == (False, True) and again is first
    cache.get("tiny-llama")  # evicts the adapter pair
    _, hit_after = cache.get("tiny-llama", artifact)
    assert not hit_after and (cache.hits, cache.misses) == (1, 3)


def test_stream_pieces_join_to_the_full_text(artifact: Path) -> None:
    loaded, _ = ModelCache().get("tiny-llama", artifact)
    prompt = encode_chat(loaded.tokenizer, [{"role": "user", "content": "hello"}])
    pieces = list(stream(loaded, prompt, GREEDY))
    assert len(pieces) >= 1
    assert "".join(pieces) == generate(loaded, prompt, GREEDY).text


def test_stop_strings_end_the_text_in_both_paths(artifact: Path) -> None:
    loaded, _ = ModelCache().get("tiny-llama", artifact)
    prompt = encode_text(loaded.tokenizer, "3+4=")
    full = generate(loaded, prompt, GREEDY).text
    assert len(full) >= 4
    stop = full[2:4]
    cut = generate(loaded, prompt, GenerationParams(max_tokens=24, temperature=0, stop=(stop,)))
    assert cut.text == full[: full.index(stop)] and cut.finish_reason == "stop"
    streamed = "".join(
        stream(loaded, prompt, GenerationParams(max_tokens=24, temperature=0, stop=(stop,)))
    )
    assert streamed == cut.text


def test_sampling_with_a_seed_repeats(artifact: Path) -> None:
    loaded, _ = ModelCache().get("tiny-llama", artifact)
    prompt = encode_text(loaded.tokenizer, "1+1=")
    params = GenerationParams(max_tokens=16, temperature=1.0, seed=5)
    assert generate(loaded, prompt, params).text == generate(loaded, prompt, params).text


def test_a_model_without_a_chat_template_is_a_user_error() -> None:
    tokenizer = load_tokenizer("tiny-llama")
    tokenizer.chat_template = None
    with pytest.raises(SteeringUserError, match="chat template"):
        encode_chat(tokenizer, [{"role": "user", "content": "hi"}])
