"""The training loss computes the LM head only where a label needs it, with transformers' result."""

from __future__ import annotations

import pytest
import torch

from steering_core.data.batches import IGNORE_INDEX
from steering_core.methods.loss import causal_lm_loss, predicting_positions
from steering_core.model.catalogue import TINY_FAMILIES
from steering_core.model.loading import build_tiny_model
from steering_core.steering.attach import attach_method

METHODS = {
    "post_block": {"type": "post_block"},
    "reft": {"type": "reft", "rank": 4},
    "lora": {"type": "lora", "lora": {"rank": 4}},
    "joint": {"type": "joint", "adapter": {"rank": 4}, "lora": {"rank": 3}},
    "full": {"type": "full"},
}


def _answer_only_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    """Three right-padded rows; labels on a few answer tokens whose positions differ per row."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, 120, (3, 12), generator=generator)
    mask = torch.ones_like(ids)
    mask[1, 9:] = 0  # row 1 is padded after 9 tokens
    mask[2, 7:] = 0
    labels = torch.full_like(ids, IGNORE_INDEX)
    for row, (start, stop) in enumerate(((8, 12), (6, 9), (5, 7))):
        labels[row, start:stop] = ids[row, start:stop]
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def test_predicting_positions_are_those_before_a_label_in_any_row() -> None:
    labels = _answer_only_batch()["labels"]
    # Row 0 labels 8..11, row 1 labels 6..8, row 2 labels 5..6: predicted from 4..10.
    assert predicting_positions(labels).tolist() == [4, 5, 6, 7, 8, 9, 10]
    assert predicting_positions(torch.full((2, 5), IGNORE_INDEX)).tolist() == []


def _randomise(attached) -> None:
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, param in attached.trainable_named_parameters():
            param.add_(torch.randn(param.shape, generator=generator, dtype=param.dtype) * 0.05)


def _loss_and_grads(attached, loss_fn) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    attached.model.zero_grad(set_to_none=True)
    loss = loss_fn()
    loss.backward()
    grads = {
        name: param.grad.clone()
        for name, param in attached.trainable_named_parameters()
        if param.grad is not None
    }
    return loss.detach(), grads


@pytest.mark.parametrize("family", TINY_FAMILIES)
@pytest.mark.parametrize("method", sorted(METHODS))
def test_loss_and_gradients_equal_transformers_causal_lm_loss(family: str, method: str) -> None:
    model = build_tiny_model(family, dtype=torch.float64)
    attached = attach_method(model, METHODS[method])
    _randomise(attached)
    attached.model.eval()  # no dropout (gpt2 has some): both passes must see the same network
    batch = _answer_only_batch()

    ours, our_grads = _loss_and_grads(attached, lambda: causal_lm_loss(attached.model, batch))
    reference, reference_grads = _loss_and_grads(attached, lambda: attached.model(**batch).loss)

    torch.testing.assert_close(ours, reference, rtol=1e-10, atol=1e-12)
    assert our_grads.keys() == reference_grads.keys() and our_grads
    assert any(g.abs().sum() > 0 for g in our_grads.values())
    for name, grad in reference_grads.items():
        torch.testing.assert_close(our_grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)


def test_only_the_kept_positions_reach_the_lm_head() -> None:
    model = build_tiny_model("llama", dtype=torch.float64)
    rows_seen: list[int] = []
    model.lm_head.register_forward_hook(lambda _m, args, _o: rows_seen.append(args[0].shape[1]))
    batch = _answer_only_batch()
    causal_lm_loss(model, batch)
    assert rows_seen == [7]  # of 12 positions


def test_the_token_accuracy_counts_the_arg_max_hits_on_labelled_tokens() -> None:
    from steering_core.methods.loss import counting_correct_tokens

    torch.manual_seed(0)
    attached = attach_method(build_tiny_model("llama"), METHODS["post_block"])
    batch = _answer_only_batch()
    with torch.no_grad():
        logits = attached.model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
    batch["labels"][0, 9] = int(logits[0, 8].argmax())  # one label the model predicts
    labels = batch["labels"][:, 1:]
    labelled = labels != IGNORE_INDEX
    hits = int(((logits[:, :-1].argmax(-1) == labels) & labelled).sum())
    with counting_correct_tokens() as counts:
        causal_lm_loss(attached.model, batch)
        causal_lm_loss(attached.model, batch)  # counts add up over the block
    assert int(labelled.sum()) == 9 and hits > 0
    assert (counts.correct, counts.total, counts.accuracy) == (2 * hits, 2 * 9, hits / 9)
    causal_lm_loss(attached.model, batch)  # outside a block: nothing counted
    assert counts.total == 2 * 9
