"""The training CLI as a subprocess: exit codes, bad data, cancellation, kill -9 and resume."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from steering_core.engine.events import parse_event
from steering_core.exit_codes import ExitCode
from tests.steering_core.train_helpers import (
    ROOT,
    cli_env,
    run_cli,
    spec_dict,
    train_cli,
    write_sums,
)


def test_train_then_evaluate_and_generate(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "train.jsonl")
    code, events, _, stderr = train_cli(tmp_path, spec_dict(data))
    assert code == 0, stderr
    assert events[0].event == "start" and events[-1].event == "end"
    artifact = events[-1].artifact

    code, _, out, err = run_cli(
        "evaluate",
        "--model",
        "tiny-llama",
        "--adapter",
        artifact,
        "--data",
        str(data),
        "--task",
        "exact",
        "--max-new-tokens",
        "3",
        "--out",
        str(tmp_path / "m.json"),
    )
    assert code == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["n"] == 48 and 0.0 <= summary["accuracy"] <= 1.0
    assert len(json.loads((tmp_path / "m.json").read_text())["examples"]) == 48
    code, _, out, err = run_cli(
        "generate",
        "--model",
        "tiny-llama",
        "--adapter",
        artifact,
        "--prompt",
        "3+4=",
        "--max-new-tokens",
        "4",
        "--strength",
        "2.0",
    )
    assert code == 0, err


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"prompt": "a", "completion": "b"}\n{"prompt": "c", \n', "line 2"),
        (b'{"prompt": "a"}\n', "completion"),
        (b"", "no examples"),
        (b'{"messages": [{"role": "bot", "content": "hi"}]}\n', "role"),
        (
            b'{"prompt": "a", "completion": "b"}\n{"prompt": "\xff\xfe", "completion": "x"}\n',
            "line 2",
        ),
    ],
    ids=["malformed-json", "missing-field", "empty-file", "wrong-role", "invalid-utf8"],
)
def test_bad_data_is_a_user_error_naming_the_problem(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_bytes(content)
    code, events, _, stderr = train_cli(tmp_path, spec_dict(data))
    assert code == ExitCode.USER_ERROR, stderr
    assert events[-1].event == "error" and events[-1].error_type == "user_error"
    assert expected in events[-1].message, events[-1].message
    assert "Traceback" not in stderr


def test_all_rows_too_long_is_a_user_error(tmp_path: Path) -> None:
    data = tmp_path / "long.jsonl"
    data.write_text(json.dumps({"prompt": "a long prompt " * 4, "completion": "yes"}) + "\n")
    code, events, _, _ = train_cli(tmp_path, spec_dict(data, max_seq_length=16))
    assert code == ExitCode.USER_ERROR
    assert "max_seq_length" in events[-1].message


def test_bad_spec_is_a_user_error(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "train.jsonl")
    spec = spec_dict(data, method={"type": "post_block", "adapter": {"rank": 0}})
    code, events, _, _ = train_cli(tmp_path, spec)
    assert code == ExitCode.USER_ERROR
    assert "method.post_block.adapter.rank" in events[-1].message
    spec = spec_dict(data, method={"type": "post_block", "site": {"layers": [9]}})
    code, events, _, _ = train_cli(tmp_path, spec, name="deep")
    assert code == ExitCode.USER_ERROR and "out of range" in events[-1].message
    code, events, _, _ = train_cli(tmp_path, spec_dict(tmp_path / "missing.jsonl"), name="nofile")
    assert code == ExitCode.USER_ERROR and "does not exist" in events[-1].message
    code, events, _, _ = train_cli(tmp_path, spec_dict(data, model="no-such-model"), name="nomodel")
    assert code == ExitCode.USER_ERROR and "not in the catalogue" in events[-1].message


def test_quota_exceeded_is_a_user_error_with_its_own_code(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "train.jsonl")
    code, events, _, stderr = train_cli(tmp_path, spec_dict(data, max_training_tokens=50))
    assert code == ExitCode.USER_ERROR, stderr
    assert [e.event for e in events] == ["error"]
    assert events[0].error_type == "user_error" and events[0].code == "quota_exceeded"
    assert "max_training_tokens quota of 50" in events[0].message
    code, events, _, _ = train_cli(tmp_path, spec_dict(tmp_path / "missing.jsonl"), name="plain")
    assert code == ExitCode.USER_ERROR and events[-1].code is None


def _start(tmp_path: Path, spec: dict, name: str, *extra: str) -> subprocess.Popen:
    (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "steering_core.cli",
            "train",
            "--spec",
            str(tmp_path / f"{name}.json"),
            "--out",
            str(tmp_path / name),
            *extra,
        ],
        cwd=ROOT,
        env=cli_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _read_until(proc: subprocess.Popen, predicate) -> list:
    seen = []
    for line in proc.stdout:
        event = parse_event(line)
        if event is not None:
            seen.append(event)
            if predicate(event):
                break
    return seen


def _long_spec(tmp_path: Path) -> dict:
    data = write_sums(tmp_path / "train.jsonl", n=64)
    return spec_dict(
        data, hyperparameters={"n_epochs": 25}, checkpoint_every_n_steps=5, keep_checkpoints=3
    )


def test_sigterm_cancels_at_a_step_boundary(tmp_path: Path) -> None:
    proc = _start(tmp_path, _long_spec(tmp_path), "run")
    _read_until(proc, lambda e: e.event == "step" and e.step >= 3)
    proc.send_signal(signal.SIGTERM)
    rest = [parse_event(line) for line in proc.stdout]
    code = proc.wait(timeout=60)
    assert code == ExitCode.CANCELLED
    kinds = [e.event for e in rest if e is not None]
    assert kinds[-2:] == ["end", "error"]
    assert not (tmp_path / "run" / "adapter").exists()


def test_kill_9_after_a_checkpoint_then_resume_matches(tmp_path: Path) -> None:
    spec = _long_spec(tmp_path)
    code, events, _, stderr = train_cli(tmp_path, spec, name="straight")
    assert code == 0, stderr
    straight_losses = [e.loss for e in events if e.event == "step"]

    proc = _start(tmp_path, spec, "killed")
    _read_until(proc, lambda e: e.event == "checkpoint" and e.step == 10)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    assert not (tmp_path / "killed" / "adapter").exists()
    code, events, _, stderr = train_cli(tmp_path, spec, "--resume", name="killed")
    assert code == 0, stderr
    start = events[0]
    assert start.event == "start" and start.resumed_from_step >= 10
    steps = [e for e in events if e.event == "step"]
    # The steps since the previous checkpoint are reported again first (the killed run's reader
    # may not have recorded them), then the checkpoint, then training goes on from the next step.
    first_new = next(i for i, e in enumerate(events) if e.event == "checkpoint")
    again = [e.step for e in events[1:first_new]]
    assert again == list(range(again[0], start.resumed_from_step + 1)) and again[0] >= 1
    assert events[first_new].step == start.resumed_from_step
    assert [e.loss for e in steps] == straight_losses[again[0] - 1 :]
    a = load_file(str(tmp_path / "straight" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_human_progress_mode(tmp_path: Path) -> None:
    data = write_sums(tmp_path / "train.jsonl")
    code, events, stdout, stderr = train_cli(tmp_path, spec_dict(data), "--progress", "human")
    assert code == 0, stderr
    assert events == [] and stdout == ""
    assert "training 48 examples for 12 steps" in stderr
    assert "12/12" in stderr and "loss=" in stderr
    assert "succeeded: adapter at" in stderr
