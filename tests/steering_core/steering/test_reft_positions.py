"""ReFT as pyreft runs it: the intervention acts at the first and last prompt tokens only, with
left or right padding, in training and in prefill, and never on generated tokens; the all-token
variant and adapters saved before positions existed steer every token."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from steering_core.artifact.store import load_artifact, read_artifact_config, save_artifact
from steering_core.data.batches import IGNORE_INDEX
from steering_core.methods.base import get_method_handler
from steering_core.methods.registry import parse_method
from steering_core.model.loading import build_tiny_model
from steering_core.steering.attach import attach_method
from steering_core.steering.positions import prompt_tokens, select_positions

PAD = 0


def _steered_positions(attached, run) -> list[torch.Tensor]:
    """Which positions of each hooked forward got a non-zero shift (layer 0's hook)."""
    seen: list[torch.Tensor] = []

    def probe(layer: int, _hidden: torch.Tensor, shift: torch.Tensor) -> None:
        if layer == 0:
            seen.append(shift.detach().abs().amax(-1) > 0)

    attached.steering.probe = probe
    try:
        with torch.no_grad():
            run()
    finally:
        attached.steering.probe = None
    return seen


def _reft(positions: str = "f2+l2", **fields):
    torch.manual_seed(0)
    model = build_tiny_model("llama")
    return attach_method(model, {"type": "reft", "rank": 4, "positions": positions, **fields})


@pytest.mark.parametrize(
    ("positions", "parsed"),
    [("f7+l7", (7, 7)), ("f1", (1, 0)), ("l5", (0, 5)), ("f3l2", (3, 2)), ("all", None)],
)
def test_positions_parse_in_pyreft_syntax(positions: str, parsed) -> None:
    assert parse_method({"type": "reft", "positions": positions}).first_last == parsed


@pytest.mark.parametrize("positions", ["", "f0", "x7", "f7+l7+l1", "first", "f99999"])
def test_bad_positions_are_refused_with_the_syntax(positions: str) -> None:
    with pytest.raises(ValueError, match="positions"):
        parse_method({"type": "reft", "positions": positions})


def test_select_positions_counts_within_each_rows_prompt() -> None:
    prompt = torch.tensor(
        [
            [0, 0, 1, 1, 1, 1, 1, 1],  # left-padded, 6 prompt tokens
            [1, 1, 1, 1, 1, 0, 0, 0],  # right-padded (or answer after), 5 prompt tokens
            [0, 0, 0, 0, 0, 1, 1, 1],  # 3 tokens: shorter than first + last, all of them once
        ],
        dtype=torch.bool,
    )
    expected = torch.tensor(
        [
            [0, 0, 1, 1, 0, 0, 1, 1],
            [1, 1, 0, 1, 1, 0, 0, 0],
            [0, 0, 0, 0, 0, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(select_positions(prompt, 2, 2), expected)
    assert torch.equal(
        select_positions(prompt, 1, 0)[0], torch.tensor([0, 0, 1, 0, 0, 0, 0, 0]).bool()
    )


def test_the_prompt_of_a_training_row_ends_at_its_first_label() -> None:
    attention = torch.tensor([[1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1]])
    labels = torch.tensor(
        [[IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX, 7, 8, IGNORE_INDEX], [IGNORE_INDEX] * 6]
    )
    assert prompt_tokens(attention, labels).long().tolist() == [
        [1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, 1],
    ]


def test_training_intervenes_at_the_prompt_ends_of_right_padded_rows() -> None:
    attached = _reft("f1+l2")
    ids = torch.tensor([[5, 6, 7, 8, 9, 10, PAD, PAD], [5, 6, 7, 8, 9, 10, 11, 12]])
    attention = (torch.arange(8) < torch.tensor([[6], [8]])).long()
    labels = torch.full_like(ids, IGNORE_INDEX)
    labels[0, 4:6] = ids[0, 4:6]  # prompt: 4 tokens, answer: 2
    labels[1, 5:8] = ids[1, 5:8]  # prompt: 5 tokens, answer: 3
    batch = {"input_ids": ids, "attention_mask": attention, "labels": labels}
    handler = get_method_handler("reft")
    (mask,) = _steered_positions(attached, lambda: handler.loss(attached.model, batch))
    assert mask.long().tolist() == [[1, 0, 1, 1, 0, 0, 0, 0], [1, 0, 0, 1, 1, 0, 0, 0]]


def test_generation_steers_the_prompt_ends_and_no_generated_token() -> None:
    attached = _reft("f2+l1")
    attached.model.eval()
    ids = torch.tensor([[PAD, PAD, 5, 6, 7, 8], [5, 6, 7, 8, 9, 10]])  # left-padded prompts
    attention = (ids != PAD).long()
    seen = _steered_positions(
        attached,
        lambda: attached.model.generate(
            input_ids=ids,
            attention_mask=attention,
            max_new_tokens=4,
            do_sample=False,
            pad_token_id=PAD,
        ),
    )
    prefill, *decode = seen
    assert prefill.long().tolist() == [[0, 0, 1, 1, 0, 1], [1, 1, 0, 0, 0, 1]]
    assert len(decode) == 3 and all(step.shape == (2, 1) and not step.any() for step in decode)


def test_the_all_token_variant_steers_every_position_and_every_generated_token() -> None:
    attached = _reft("all", site={"name": "mlp_output"})
    assert attached.steering.positions is None and attached.steering.site == "mlp_output"
    ids = torch.tensor([[5, 6, 7, 8]])
    seen = _steered_positions(
        attached,
        lambda: attached.model.generate(
            input_ids=ids, max_new_tokens=3, do_sample=False, pad_token_id=PAD
        ),
    )
    assert all(step.all() for step in seen) and len(seen) == 3


def test_an_adapter_saved_before_positions_existed_loads_as_the_all_token_variant(
    tmp_path: Path,
) -> None:
    attached = _reft("all", site={"name": "mlp_output"})
    save_artifact(attached, tmp_path, base_model_id="tiny-llama")
    config_file = tmp_path / "steering_config.json"
    raw = json.loads(config_file.read_text())
    del raw["method"]["positions"]  # what the files saved before positions existed hold
    config_file.write_text(json.dumps(raw))
    assert read_artifact_config(tmp_path).method.positions == "all"
    torch.manual_seed(0)
    loaded = load_artifact(build_tiny_model("llama"), tmp_path)
    assert loaded.steering.positions is None and loaded.steering.site == "mlp_output"


def test_the_layer_tensors_export_says_where_reft_applies(tmp_path: Path) -> None:
    from steering_core.artifact.exports import export_layer_tensors

    save_artifact(_reft("f7+l7"), tmp_path / "pyreft", base_model_id="tiny-llama")
    described = export_layer_tensors(tmp_path / "pyreft", tmp_path / "out-pyreft")
    assert "first 7 and the last 7 tokens of the prompt" in described["application"]
    assert "never on generated tokens" in (tmp_path / "out-pyreft" / "README.md").read_text()
    save_artifact(_reft("all"), tmp_path / "all", base_model_id="tiny-llama")
    described = export_layer_tensors(tmp_path / "all", tmp_path / "out-all")
    assert "every token position (prompt and generated tokens)" in described["application"]
