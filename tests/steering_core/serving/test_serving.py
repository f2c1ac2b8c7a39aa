"""The batching engine on tiny-llama: a batch mixing every batched adapter kind, the base model
and several strengths gives each request what it gets alone, in one forward per decode step;
requests join and leave mid-decode; several adapters add up; streaming, stop strings, seeds,
cancellation; the adapter pool."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
import torch

from steering_core.errors import ArtifactError, SteeringUserError
from steering_core.evaluation.greedy import generate_greedy
from steering_core.model.loading import load_model, load_tokenizer
from steering_core.serving import BatchEngine, GenerationCancelled
from steering_core.serving.forms import ServingAdapter, read_serving_adapter
from steering_core.serving.pool import AdapterPool
from steering_core.serving.requests import GenerationParams, encode_chat, encode_text
from steering_core.serving.served_models import ServedModels, resolve_device
from tests.steering_core.serving_helpers import (
    MODEL,
    assert_matches,
    make_artifacts,
    reference,
)

GREEDY = GenerationParams(max_tokens=8, temperature=0)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return make_artifacts(tmp_path_factory.mktemp("serving"))


@pytest.fixture(scope="module")
def adapters(artifacts: dict[str, Path]) -> dict[str, ServingAdapter]:
    return {
        name: read_serving_adapter(path, name) for name, path in artifacts.items() if name != "full"
    }


@pytest.fixture
def engine():
    engine = BatchEngine(load_model(MODEL), load_tokenizer(MODEL), max_batch=16)
    yield engine
    engine.close()


def _prompt(seed: int, length: int) -> list[int]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(3, 120, (length,), generator=generator).tolist()


MIX = [
    ("vector", 1.0),
    ("linear", 0.5),
    ("nonlinear", 1.5),
    ("reft", 1.0),
    ("lora", 1.0),
    ("joint", 0.5),
    (None, 1.0),
    ("post_block", 0.0),
]


def test_a_mixed_batch_gives_each_request_its_alone_result_in_one_forward_per_step(
    engine: BatchEngine, artifacts: dict[str, Path], adapters: dict[str, ServingAdapter]
) -> None:
    prompts = [_prompt(i, 3 + 2 * i) for i in range(len(MIX))]
    calls: list[int] = []
    counter = engine.model.register_forward_pre_hook(lambda *_: calls.append(1))
    handles = [
        engine.submit(prompt, GREEDY, [(adapters[name], s)] if name else [], keep_logits=True)
        for prompt, (name, s) in zip(prompts, MIX, strict=True)
    ]
    results = [h.future.result(timeout=120) for h in handles]
    counter.remove()
    # submitted together before the loop woke, or within its first step: never one by one
    assert len(calls) <= GREEDY.max_tokens + 1, len(calls)
    assert engine.peak_rows >= len(MIX) - 1
    for prompt, (name, strength), handle, result in zip(
        prompts, MIX, handles, results, strict=True
    ):
        assert result.completion_tokens == len(handle.logits or [])
        wanted = [(artifacts[name], strength)] if name else []
        _, logits = reference(wanted, prompt, len(handle.logits or []))
        assert_matches(handle.logits or [], logits, f"{name} at {strength}")


def test_requests_join_and_leave_while_others_decode(
    engine: BatchEngine, artifacts: dict[str, Path], adapters: dict[str, ServingAdapter]
) -> None:
    long = GenerationParams(max_tokens=24, temperature=0)
    first_prompt, second_prompt = _prompt(20, 5), _prompt(21, 11)
    first = engine.submit(first_prompt, long, [(adapters["linear"], 1.0)], keep_logits=True)
    deadline = time.monotonic() + 60
    while len(first.logits or []) < 4 and time.monotonic() < deadline:
        time.sleep(0.001)
    assert not first.future.done()
    second = engine.submit(
        second_prompt,
        GenerationParams(max_tokens=6, temperature=0),
        [(adapters["reft"], 1.0)],
        keep_logits=True,
    )
    second.future.result(timeout=60)
    first.future.result(timeout=60)
    assert engine.peak_rows == 2
    for prompt, artifact, handle in (
        (first_prompt, artifacts["linear"], first),
        (second_prompt, artifacts["reft"], second),
    ):
        _, logits = reference([(artifact, 1.0)], prompt, len(handle.logits or []))
        assert_matches(handle.logits or [], logits, artifact.name)


def test_several_adapters_on_one_row_add_their_shifts(
    engine: BatchEngine, artifacts: dict[str, Path], adapters: dict[str, ServingAdapter]
) -> None:
    prompt = _prompt(30, 7)
    chosen = [("vector", 0.5), ("nonlinear", 1.0), ("post_block", -0.5)]
    handle = engine.submit(prompt, GREEDY, [(adapters[n], s) for n, s in chosen], keep_logits=True)
    handle.future.result(timeout=60)
    _, logits = reference([(artifacts[n], s) for n, s in chosen], prompt, GREEDY.max_tokens)
    assert_matches(handle.logits or [], logits, "three adapters")
    _, single = reference([(artifacts["vector"], 0.5)], prompt, GREEDY.max_tokens)
    assert float((logits[0] - single[0]).abs().max()) > 1e-3  # the others do change it


def test_greedy_equals_the_evaluation_path(
    engine: BatchEngine, artifacts: dict[str, Path], adapters: dict[str, ServingAdapter]
) -> None:
    from steering_core.artifact.store import load_artifact

    prompt = encode_text(engine.tokenizer, "3+4=")
    params = GenerationParams(max_tokens=24, temperature=0)
    steered = engine.generate(prompt, params, [(adapters["post_block"], 1.0)])
    base = engine.generate(prompt, params)
    model = load_artifact(load_model(MODEL), artifacts["post_block"]).model
    expected = generate_greedy(model, engine.tokenizer, [prompt], max_new_tokens=24)[0]
    assert steered.text == expected and steered.text != base.text
    plain = generate_greedy(load_model(MODEL), engine.tokenizer, [prompt], max_new_tokens=24)[0]
    assert base.text == plain
    assert steered.prompt_tokens == len(prompt) and 0 < steered.completion_tokens <= 24


def test_streamed_pieces_join_to_the_text_and_stop_strings_cut_it(
    engine: BatchEngine, adapters: dict[str, ServingAdapter]
) -> None:
    prompt = encode_chat(engine.tokenizer, [{"role": "user", "content": "hello"}])
    params = GenerationParams(max_tokens=24, temperature=0)
    steering = [(adapters["post_block"], 1.0)]
    pieces: list[str] = []
    whole = engine.submit(
        prompt, params, steering, on_text=lambda piece, _: pieces.append(piece)
    ).future.result(60)
    assert len(pieces) >= 1 and "".join(pieces) == whole.text
    assert len(whole.text) >= 4
    stop = whole.text[2:4]
    stopped = GenerationParams(max_tokens=24, temperature=0, stop=(stop,))
    cut_pieces: list[str] = []
    cut = engine.submit(
        prompt, stopped, steering, on_text=lambda piece, _: cut_pieces.append(piece)
    ).future.result(60)
    assert cut.text == whole.text[: whole.text.index(stop)] and cut.finish_reason == "stop"
    assert "".join(cut_pieces) == cut.text


def test_a_seeded_request_samples_the_same_whatever_shares_its_batch(
    engine: BatchEngine, adapters: dict[str, ServingAdapter]
) -> None:
    prompt = _prompt(40, 6)
    params = GenerationParams(max_tokens=16, temperature=1.0, seed=5)
    alone = engine.generate(prompt, params, [(adapters["vector"], 1.0)])
    crowd = [
        engine.submit(_prompt(41 + i, 4 + i), GenerationParams(max_tokens=16, temperature=0.7))
        for i in range(3)
    ]
    again = engine.submit(prompt, params, [(adapters["vector"], 1.0)])
    assert again.future.result(60).text == alone.text
    for handle in crowd:
        handle.future.result(60)
    other_seed = engine.generate(
        prompt,
        GenerationParams(max_tokens=16, temperature=1.0, seed=6),
        [(adapters["vector"], 1.0)],
    )
    assert other_seed.text != alone.text  # the seed, not the batch, decides the draws


def test_a_cancelled_request_leaves_the_batch_and_the_others_finish(
    engine: BatchEngine, adapters: dict[str, ServingAdapter]
) -> None:
    long = GenerationParams(max_tokens=400, temperature=0)
    started = threading.Event()
    doomed = engine.submit(_prompt(50, 5), long, on_text=lambda *_: started.set(), keep_logits=True)
    other = engine.submit(_prompt(51, 5), GenerationParams(max_tokens=40, temperature=0))
    deadline = time.monotonic() + 60
    while len(doomed.logits or []) < 2 and time.monotonic() < deadline:
        time.sleep(0.001)
    doomed.cancel()
    with pytest.raises(GenerationCancelled):
        doomed.future.result(timeout=60)
    assert len(doomed.logits or []) < 400
    assert other.future.result(timeout=60).completion_tokens >= 1
    deadline = time.monotonic() + 10
    while engine.in_flight and time.monotonic() < deadline:
        time.sleep(0.01)
    assert engine.in_flight == 0


def test_a_full_artifact_is_not_a_batched_adapter(artifacts: dict[str, Path]) -> None:
    with pytest.raises(ArtifactError, match="not served from a shared base model"):
        read_serving_adapter(artifacts["full"], "x")


def test_reading_an_adapter_keeps_only_its_parts(adapters: dict[str, ServingAdapter]) -> None:
    post_block = adapters["post_block"]  # nonlinear r=8 at block_output of every layer, fp32
    layers = len(load_model(MODEL).model.layers)
    hidden = load_model(MODEL).config.hidden_size
    assert post_block.nbytes == layers * 2 * hidden * 8 * 4
    assert set(adapters["lora"].parts) and all(k.module for k in adapters["lora"].parts)
    joint_keys = adapters["joint"].parts
    assert any(k.module for k in joint_keys) and any(k.site for k in joint_keys)


def test_the_pool_is_bounded_by_bytes_and_keyed_by_content(
    adapters: dict[str, ServingAdapter],
) -> None:
    one = adapters["post_block"].nbytes
    pool = AdapterPool(max_bytes=2 * one)
    loads: list[str] = []

    def loader(sha: str):
        def load() -> ServingAdapter:
            loads.append(sha)
            return ServingAdapter(sha, "post_block", MODEL, dict(adapters["post_block"].parts))

        return load

    a, hit = pool.get("a", loader("a"))
    assert not hit and a.sha256 == "a"
    assert pool.get("a", loader("a")) == (a, True)
    pool.get("b", loader("b"))
    pool.get("a", loader("a"))  # a is now the most recent
    pool.get("c", loader("c"))  # over 2 adapters' bytes: b, the least recent, goes
    assert "a" in pool and "c" in pool and "b" not in pool
    stats = pool.stats()
    assert (stats.adapters, stats.bytes, stats.evictions) == (2, 2 * one, 1)
    assert loads == ["a", "b", "c"]


def test_concurrent_misses_load_an_adapter_once(adapters: dict[str, ServingAdapter]) -> None:
    pool = AdapterPool(max_bytes=10**9)
    loads: list[int] = []

    def slow() -> ServingAdapter:
        loads.append(1)
        time.sleep(0.2)
        return adapters["vector"]

    threads = [threading.Thread(target=pool.get, args=("same", slow)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [1] and pool.stats().hits == 3


def test_a_model_without_a_chat_template_is_a_user_error() -> None:
    tokenizer = load_tokenizer(MODEL)
    tokenizer.chat_template = None
    with pytest.raises(SteeringUserError, match="chat template"):
        encode_chat(tokenizer, [{"role": "user", "content": "hi"}])


def test_the_device_and_precision_settings_resolve_or_name_the_problem() -> None:
    assert resolve_device("auto", "auto") == (
        (torch.device("cuda"), torch.bfloat16)
        if torch.cuda.is_available()
        else (torch.device("cpu"), torch.float32)
    )
    assert resolve_device("cpu", "bfloat16") == (torch.device("cpu"), torch.bfloat16)
    with pytest.raises(SteeringUserError, match="float64"):
        resolve_device("cpu", "float64")
    if not torch.cuda.is_available():
        with pytest.raises(SteeringUserError, match="cuda:1"):
            resolve_device("cuda:1", "auto")


def test_a_model_served_in_bfloat16_keeps_its_adapters_in_bfloat16(
    artifacts: dict[str, Path],
) -> None:
    served = ServedModels(device="cpu", dtype="bfloat16")
    try:
        engine, _ = served.base(MODEL)
        assert engine.model.get_input_embeddings().weight.dtype == torch.bfloat16
        adapter, _ = served.adapter(engine, "nonlinear", artifacts["nonlinear"], lambda: None)
        dtypes = {
            tensor.dtype
            for parts in adapter.parts.values()
            for part in parts
            for tensor in (part.down_t, part.up_t)
        }
        assert dtypes == {torch.bfloat16}
        result = engine.generate(_prompt(40, 5), GREEDY, [(adapter, 1.0)])
        assert result.completion_tokens >= 1
    finally:
        served.close()
