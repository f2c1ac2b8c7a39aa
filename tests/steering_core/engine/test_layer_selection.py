"""``site.layers: "auto"``: every layer scored on training batches, the best k steered; and the
backward pass stops at the lowest steered layer.

Real training of tiny models through the engine (``steering_core.engine.train.train``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import transformers as tf
from torch import nn

import steering_core.engine.train as engine
from steering_core.artifact.store import load_artifact, read_artifact_config
from steering_core.engine.checkpoint import STATE_FILE, checkpoint_dir
from steering_core.engine.events import LayerSelectionEvent
from steering_core.engine.layer_selection import choose_layers, resolve_auto_layers
from steering_core.engine.train import train
from steering_core.methods.base import get_method_handler
from steering_core.methods.registry import parse_method
from steering_core.model.loading import _tiny_llama_kwargs, build_tiny_model, build_tiny_tokenizer
from steering_core.model.sites import decoder_layers
from steering_core.spec.training_spec import TrainingSpec
from tests.steering_core.train_helpers import spec_dict, write_sums


class Collect:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)

    def selection(self) -> LayerSelectionEvent:
        (found,) = [e for e in self.events if e.event == "layer_selection"]
        return found


def _auto(site: dict[str, Any], **overrides: Any) -> dict[str, Any]:
    return {"method": {"type": "post_block", "site": {"layers": "auto", **site}}, **overrides}


def _train(root: Path, name: str, **overrides: Any) -> tuple[Collect, Path]:
    data = root / "train.jsonl"
    if not data.exists():
        write_sums(data)
    spec = spec_dict(data, **overrides)
    spec["hyperparameters"] = {**spec["hyperparameters"], "max_steps": 2}
    reporter = Collect()
    result = train(TrainingSpec.model_validate(spec), root / name, reporter)
    assert result.artifact_dir is not None
    return reporter, result.artifact_dir


def test_auto_steers_exactly_k_layers_the_same_for_a_seed(tmp_path: Path) -> None:
    first, artifact = _train(tmp_path, "a", **_auto({"max_layers": 2}))
    again, _ = _train(tmp_path, "b", **_auto({"max_layers": 2}))
    # tiny-llama: H 32, rank 8 -> 512 parameters a layer; 1100 of them buy 2 layers
    by_parameters, _ = _train(tmp_path, "c", **_auto({"max_parameters": 1100}))
    chosen = first.selection()
    assert len(chosen.chosen) == 2 and len(chosen.scores) == 3
    assert chosen.chosen == choose_layers([s or 0.0 for s in chosen.scores], 2)
    assert again.selection().scores == chosen.scores
    assert again.selection().chosen == by_parameters.selection().chosen == chosen.chosen
    assert (chosen.max_layers, chosen.probe_batches) == (2, 4)
    assert by_parameters.selection().max_parameters == 1100
    kinds = [e.event for e in first.events]
    assert kinds.index("start") + 1 == kinds.index("layer_selection") < kinds.index("step")

    # the artifact lists the chosen layers in place of "auto" and loads like any other
    config = read_artifact_config(artifact)
    assert config.layers == chosen.chosen
    assert config.method.site.layers == chosen.chosen
    assert config.method.site.max_layers is None
    assert "max_layers" not in config.method.model_dump()["site"]
    manifest = config.training_manifest or {}
    assert manifest["layer_selection"]["scores"] == chosen.scores
    assert manifest["layer_selection"]["chosen"] == chosen.chosen
    assert manifest["spec"]["method"]["site"]["layers"] == "auto"  # what was asked
    loaded = load_artifact(build_tiny_model("llama"), artifact)
    assert loaded.steered_layers == chosen.chosen
    assert [entry["layer"] for entry in manifest["layer_stats"]] == chosen.chosen

    # a resumed run takes the choice its checkpoint saved, without probing again
    out = tmp_path / "ckpt"
    _train(tmp_path, "ckpt", **_auto({"max_layers": 1}), checkpoint_every_n_steps=1)
    state = json.loads((checkpoint_dir(out, 2) / STATE_FILE).read_text())
    method = parse_method(_auto({"max_layers": 1})["method"])
    resolved, selection, restored = resolve_auto_layers(
        method,
        build_tiny_model("llama"),
        get_method_handler("post_block"),
        rows=[],
        pad_id=0,
        seed=7,
        batch_rows=4,
        device=torch.device("cpu"),
        resume_from=out,
    )
    assert restored and selection is not None
    assert selection.chosen == resolved.site.layers == state["layer_selection"]["chosen"]


# -- a planted layer ------------------------------------------------------------------------------

BIG, CARRIER, CHANNEL, OUTPUT = 100.0, 0, 1, 2  # residual dimensions
PLANTED, DEPTH, GAIN = 2, 5, 200.0


def _plant_unit(mlp: nn.Module, reads: int, writes: int, weight: float) -> None:
    """MLP hidden unit 0 becomes ``weight · silu(x_carrier) · x_reads`` written into ``writes``."""
    for proj in (mlp.gate_proj, mlp.up_proj):
        proj.weight[0] = 0.0
    mlp.gate_proj.weight[0, CARRIER] = 1.0
    mlp.up_proj.weight[0, reads] = 1.0
    mlp.down_proj.weight[:, 0] = 0.0
    mlp.down_proj.weight[writes, 0] = weight


def _unit_gain(model: nn.Module, layer: int, ids: torch.Tensor) -> float:
    """d(output of planted unit 0 of ``layer``) / d(residual CHANNEL) per unit weight: the gate's
    value over the MLP input's RMS (the same at every token: the carrier dominates the norm)."""
    seen: dict[str, torch.Tensor] = {}
    norm = model.model.layers[layer].post_attention_layernorm
    handle = norm.register_forward_hook(lambda _m, args, _o: seen.setdefault("x", args[0]))
    with torch.no_grad():
        model(input_ids=ids)
    handle.remove()
    x = seen["x"]
    rms = x.pow(2).mean(-1).add(model.config.rms_norm_eps).sqrt()
    gains = torch.nn.functional.silu(norm.weight[CARRIER] * x[..., CARRIER] / rms) / rms
    assert float(gains.std() / gains.mean()) < 1e-4  # a constant gain: the planting is linear
    return float(gains.mean())


def planted_model(directory: Path) -> Path:
    """A 5-layer Llama in which only layer 2's block output can carry a large first-order gain.

    Residual dimension CHANNEL is empty in the base model (no embedding or branch writes it) and
    nothing reads it, except two planted MLP units: block 3 amplifies it into OUTPUT with gain
    ``GAIN`` (per unit of residual), and block 2 writes ``-CHANNEL``, erasing whatever earlier
    layers put there. The final norm ignores CHANNEL. So a shift along CHANNEL at layer 2's output
    moves OUTPUT by ``GAIN`` times itself; the same shift at layers 0-1 is erased by block 2, and at
    layers 3-4 reaches nothing. Every other direction reaches the loss through the residual
    stream alone at every layer, with gain 1. A large constant CARRIER coordinate makes each
    block's RMS (and so the planted units' gains) the same at every token, so the erasure is exact
    to first order. To first order every layer's effect on the loss goes through the top layer's
    gradient, so "the only useful layer" means: within the same relative budget, layer 2's shift
    buys about ``GAIN`` times what a shift anywhere else buys.
    """
    torch.manual_seed(0)
    config = tf.LlamaConfig(
        **{**_tiny_llama_kwargs(), "num_hidden_layers": DEPTH, "tie_word_embeddings": False}
    )
    model = tf.LlamaForCausalLM(config).eval()
    ids = torch.randint(3, 250, (4, 12))
    with torch.no_grad():
        embedding = model.model.embed_tokens.weight
        embedding[:, CHANNEL], embedding[:, CARRIER] = 0.0, BIG
        for layer in model.model.layers:
            attention, mlp = layer.self_attn, layer.mlp
            for proj in (attention.q_proj, attention.k_proj, attention.v_proj):
                proj.weight[:, CHANNEL] = 0.0
            for proj in (mlp.gate_proj, mlp.up_proj):
                proj.weight[:, CHANNEL] = 0.0
            attention.o_proj.weight[CHANNEL] = 0.0
            mlp.down_proj.weight[CHANNEL] = 0.0
        model.model.norm.weight[CHANNEL] = model.model.norm.weight[CARRIER] = 0.0
        amplifier, eraser = model.model.layers[PLANTED + 1].mlp, model.model.layers[PLANTED].mlp
        _plant_unit(amplifier, CHANNEL, OUTPUT, 1.0)
        _plant_unit(eraser, CHANNEL, CHANNEL, 1.0)
        amplifier.down_proj.weight[OUTPUT, 0] = GAIN / _unit_gain(model, PLANTED + 1, ids)
        eraser.down_proj.weight[CHANNEL, 0] = -1.0 / _unit_gain(model, PLANTED, ids)
    model.save_pretrained(directory)
    build_tiny_tokenizer().save_pretrained(directory)
    return directory


def _outputs_with_shift(model: nn.Module, ids: torch.Tensor, layer: int) -> list[torch.Tensor]:
    """Every block's output with 1e-2 added along CHANNEL at ``layer``'s output."""
    outputs: list[torch.Tensor] = []

    def shift(_m: nn.Module, _a: Any, output: Any) -> Any:
        hidden = output[0] if isinstance(output, tuple) else output
        moved = hidden.clone()
        moved[..., CHANNEL] += 1e-2
        return (moved, *output[1:]) if isinstance(output, tuple) else moved

    layers = decoder_layers(model)
    handles = [layers[layer].register_forward_hook(shift)]
    for block in layers:
        handles.append(
            block.register_forward_hook(
                lambda _m, _a, o: outputs.append((o[0] if isinstance(o, tuple) else o).detach())
            )
        )
    with torch.no_grad():
        model(input_ids=ids)
    for handle in handles:
        handle.remove()
    return outputs


def test_auto_finds_the_one_layer_a_shift_can_use(tmp_path: Path) -> None:
    path = planted_model(tmp_path / "planted")
    model = tf.AutoModelForCausalLM.from_pretrained(path).eval()
    ids = torch.randint(3, 250, (2, 10))
    # the construction: CHANNEL is erased by block 2, amplified by block 3, unread elsewhere
    below = _outputs_with_shift(model, ids, PLANTED - 1)
    assert below[PLANTED][..., CHANNEL].abs().max() < 1e-6
    at = _outputs_with_shift(model, ids, PLANTED)
    base = _outputs_with_shift(model, ids, DEPTH - 1)
    moved = (at[PLANTED + 1] - base[PLANTED + 1])[..., OUTPUT] / 1e-2
    assert torch.allclose(moved, torch.full_like(moved, GAIN), rtol=1e-3)

    spec = _auto({"max_layers": 1}, model=str(path))
    reporter, artifact = _train(tmp_path, "run", **spec)
    selection = reporter.selection()
    scores = [float(s or 0.0) for s in selection.scores]
    assert selection.chosen == [PLANTED]
    last_k = [DEPTH - 1]  # what "the last k layers" would steer
    assert selection.chosen != last_k
    assert scores[PLANTED] > 10 * scores[DEPTH - 1]
    assert scores[PLANTED] > 10 * max(s for i, s in enumerate(scores) if i != PLANTED)
    assert read_artifact_config(artifact).layers == [PLANTED]


# -- backward stops where the adapters stop -------------------------------------------------------


def _counting_backward(counts: dict[str, int]) -> Callable[..., nn.Module]:
    """``load_model`` whose model counts full backward hooks per decoder layer (``layer{i}``)
    and per attention and MLP inside it (``inner{i}``)."""
    original = engine.load_model

    def load(*args: Any, **kwargs: Any) -> nn.Module:
        model = original(*args, **kwargs)
        for index, layer in enumerate(decoder_layers(model)):
            for key, module in (
                (f"layer{index}", layer),
                (f"inner{index}", layer.self_attn),
                (f"inner{index}", layer.mlp),
            ):
                module.register_full_backward_hook(
                    lambda _m, _gi, _go, key=key: counts.__setitem__(key, counts.get(key, 0) + 1)
                )
        return model

    return load


@pytest.mark.filterwarnings("ignore:Full backward hook is firing:UserWarning")
@pytest.mark.parametrize("layers", [[1], [2], "auto"])
def test_no_layer_below_the_lowest_adapter_runs_backward(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, layers: list[int] | str
) -> None:
    counts: dict[str, int] = {}
    monkeypatch.setattr(engine, "load_model", _counting_backward(counts))
    site: dict[str, Any] = {"layers": layers}
    if layers == "auto":
        site["max_layers"] = 1

    class FromFirstStep(Collect):
        def emit(self, event: Any) -> None:
            super().emit(event)
            if event.event == "start":  # the probe (auto) differentiates every layer: not counted
                counts.clear()

    spec = spec_dict(write_sums(tmp_path / "train.jsonl", n=16), method={"type": "post_block"})
    spec["method"]["site"] = site
    spec["hyperparameters"] = {**spec["hyperparameters"], "max_steps": 1}
    reporter = FromFirstStep()
    train(TrainingSpec.model_validate(spec), tmp_path / "out", reporter)
    steered = reporter.selection().chosen if layers == "auto" else layers
    assert isinstance(steered, list)
    lowest = min(steered)
    for index in range(3):
        # a layer's own hook fires when the gradient reaches its output; its attention and MLP
        # only when the gradient flows through them, i.e. above the lowest adapter
        assert (counts.get(f"layer{index}", 0) > 0) == (index >= lowest), (index, counts)
        assert (counts.get(f"inner{index}", 0) > 0) == (index > lowest), (index, counts)
