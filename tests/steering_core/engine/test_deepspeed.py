"""DeepSpeed on CPU (gloo): ZeRO 0, 2 and 3 follow the plain path's loss curve.

Tolerance: losses within 1e-4 relative of the plain torch path at every step, adapters within
1e-4 absolute. The paths differ only in the order of floating-point reductions (DeepSpeed
flattens gradients into buffers and computes the clipping norm over them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.steering_core.train_helpers import spec_dict, train_cli, write_sums

pytestmark = pytest.mark.slow

LOSS_RTOL = 1e-4
ADAPTER_ATOL = 1e-4


@pytest.fixture(scope="module")
def plain_run(tmp_path_factory) -> tuple[Path, list[float], Path]:
    tmp = tmp_path_factory.mktemp("plain")
    data = write_sums(tmp / "train.jsonl", n=32)
    code, events, _, stderr = train_cli(tmp, spec_dict(data), name="plain")
    assert code == 0, stderr
    return data, [e.loss for e in events if e.event == "step"], tmp / "plain" / "adapter"


@pytest.mark.parametrize(
    ("stage", "offload"),
    [
        (0, {}),
        (2, {}),
        (3, {}),
        (2, {"offload_optimizer": True}),
        (3, {"offload_optimizer": True, "offload_param": True}),
    ],
    ids=["zero0", "zero2", "zero3", "zero2-offload", "zero3-offload"],
)
def test_zero_stage_matches_plain_path(
    stage: int, offload: dict, plain_run, tmp_path: Path
) -> None:
    data, plain_losses, plain_adapter = plain_run
    spec = spec_dict(data, deepspeed={"zero_stage": stage, **offload})
    code, events, _, stderr = train_cli(tmp_path, spec, name=f"zero{stage}")
    assert code == 0, stderr[-3000:]
    assert events[0].backend == "deepspeed"
    losses = [e.loss for e in events if e.event == "step"]
    assert len(losses) == len(plain_losses)
    torch.testing.assert_close(
        torch.tensor(losses), torch.tensor(plain_losses), rtol=LOSS_RTOL, atol=0
    )
    ours = load_file(str(tmp_path / f"zero{stage}" / "adapter" / "adapter_model.safetensors"))
    reference = load_file(str(plain_adapter / "adapter_model.safetensors"))
    assert ours.keys() == reference.keys()
    for key, tensor in ours.items():
        # ZeRO-3 partitions parameters: an ungathered save would write empty tensors.
        assert tensor.shape == reference[key].shape and tensor.numel() > 0, key
        torch.testing.assert_close(tensor, reference[key], rtol=0, atol=ADAPTER_ATOL)
    assert any(t.abs().max() > 0 for k, t in ours.items() if "up" in k), "adapter never trained"


def test_zero3_resume_from_checkpoint(tmp_path: Path, plain_run) -> None:
    data, plain_losses, _ = plain_run
    spec = spec_dict(data, deepspeed={"zero_stage": 3}, checkpoint_every_n_steps=4)
    code, _, _, stderr = train_cli(tmp_path, spec, name="z3")
    assert code == 0, stderr[-3000:]
    # Drop the final artifact and the last checkpoint, then resume from step 4.
    import shutil

    shutil.rmtree(tmp_path / "z3" / "adapter")
    shutil.rmtree(tmp_path / "z3" / "checkpoints" / "step-000008")
    code, events, _, stderr = train_cli(tmp_path, spec, "--resume", name="z3")
    assert code == 0, stderr[-3000:]
    assert events[0].resumed_from_step == 4
    losses = [e.loss for e in events if e.event == "step"]  # steps 1-4 reported again, then 5-8
    torch.testing.assert_close(
        torch.tensor(losses), torch.tensor(plain_losses), rtol=LOSS_RTOL, atol=0
    )


def test_joint_projection_refuses_zero_stages_that_would_undo_it(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "train.jsonl", n=8)
    spec = spec_dict(data, method={"type": "joint"}, deepspeed={"zero_stage": 2})
    code, events, _, _ = train_cli(tmp_path, spec)
    assert code == 2 and "zero_stage 0" in events[-1].message
