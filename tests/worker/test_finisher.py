"""The finisher: the in-process, torch-free artifact check on artifacts the engine saved (and on
damaged copies of them), and the end of a job recorded through the real registry."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from sqlalchemy import select

from registry.db import session_scope
from registry.errors import InvalidJobStatus
from registry.jobs import get_job, request_cancel, request_pause
from registry.models import Adapter, File
from registry.progress import record_progress
from registry.settings import Settings
from registry.storage import content_path
from steering_core.artifact.check import check_artifact
from steering_core.artifact.store import save_artifact
from steering_core.engine.events import ErrorEvent
from steering_core.errors import ArtifactError
from steering_core.exit_codes import ExitCode
from steering_core.model.loading import build_tiny_model
from steering_core.steering.attach import attach_method
from tests.steering_core.train_helpers import train_tiny_artifact
from tests.worker.helpers import events_of, job_row
from worker.finisher import finish_job
from worker.leased_job import LeasedJob
from worker.supervisor import TrainingExit

ROOT = Path(__file__).resolve().parents[2]
SAVED_METHODS = {
    "lora": {"type": "lora"},
    "full": {"type": "full"},
    "joint": {"type": "joint"},
    "reft": {"type": "reft"},
    "vector": {"type": "post_block", "adapter": {"kind": "vector"}},
}
SUCCEEDED = TrainingExit(returncode=ExitCode.OK, cancelled=False, stderr_tail=[])


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Artifacts saved by the engine: ``post_block`` trained for real (tiny-llama, about 2 s),
    the other methods attached to a tiny model and saved without training."""
    root = tmp_path_factory.mktemp("artifacts")
    saved = {"post_block": train_tiny_artifact(root / "trained")}
    for name, method in SAVED_METHODS.items():
        save_artifact(attach_method(build_tiny_model("llama"), method), root / name)
        saved[name] = root / name
    return saved


def _copy(artifacts: dict[str, Path], name: str, tmp_path: Path) -> Path:
    return Path(shutil.copytree(artifacts[name], tmp_path / f"copy-{name}"))


def _rewrite_tensor(path: Path, name: str, tensor: torch.Tensor | None) -> None:
    tensors = load_file(str(path))
    if tensor is None:
        del tensors[name]
    else:
        tensors[name] = tensor
    save_file(tensors, str(path))


# --- the check ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["post_block", *SAVED_METHODS])
def test_the_check_accepts_what_the_engine_saved(artifacts: dict[str, Path], name: str) -> None:
    checked = check_artifact(artifacts[name])
    config = json.loads((artifacts[name] / "steering_config.json").read_text())
    expected_tensors = {"post_block": 6, "joint": 6, "reft": 12, "vector": 3}.get(name, 0)
    assert checked.summary() == {
        "ok": True,
        "method": config["method"]["type"],
        "layers": len(config["layers"]),
        "tensors": expected_tensors,
        "trainable_parameters": config["parameters"]["trainable"],
    }


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[:-7])


DAMAGES = {
    # name: (artifact, damage, the message's words)
    "truncated_steering": (
        "post_block",
        lambda a: _truncate(a / "adapter_model.safetensors"),
        r"adapter_model\.safetensors is not a readable safetensors file: .*\(truncated\)",
    ),
    "truncated_full_model": (
        "full",
        lambda a: _truncate(a / "model.safetensors"),
        r"model\.safetensors is not a readable safetensors file: .*\(truncated\)",
    ),
    "truncated_lora": (
        "lora",
        lambda a: _truncate(a / "lora" / "adapter_model.safetensors"),
        r"adapter_model\.safetensors is not a readable safetensors file",
    ),
    "not_hidden_sized": (
        "post_block",
        lambda a: _rewrite_tensor(
            a / "adapter_model.safetensors", "layers.1.down.weight", torch.zeros(8, 31)
        ),
        r"tensor layers\.1\.down\.weight has shape \(8, 31\): expected a dimension of hidden "
        r"size 32",
    ),
    "wrong_rank": (
        "post_block",
        lambda a: _rewrite_tensor(
            a / "adapter_model.safetensors", "layers.0.up.weight", torch.zeros(32, 7)
        ),
        r"tensor layers\.0\.up\.weight has shape \(32, 7\): expected rank 8",
    ),
    "wrong_vector": (
        "vector",
        lambda a: _rewrite_tensor(
            a / "adapter_model.safetensors", "layers.0.vector", torch.zeros(8)
        ),
        r"tensor layers\.0\.vector has shape \(8,\): expected a vector of hidden size 32",
    ),
    "empty_tensor": (
        "post_block",
        lambda a: _rewrite_tensor(
            a / "adapter_model.safetensors", "layers.2.up.weight", torch.zeros(0, 8)
        ),
        r"tensor layers\.2\.up\.weight has shape \(0, 8\): an empty tensor",
    ),
    "a_layer_missing": (
        "reft",
        lambda a: [
            _rewrite_tensor(a / "adapter_model.safetensors", f"layers.2.{n}", None)
            for n in ("rotation", "rotation_raw", "source.bias", "source.weight")
        ],
        r"tensors cover layers \[0, 1\], config says \[0, 1, 2\]",
    ),
    "missing_listed_file": (
        "post_block",
        lambda a: (a / "adapter_model.safetensors").unlink(),
        r"lists adapter_model\.safetensors but it is missing",
    ),
    "missing_lora_folder": (
        "joint",
        lambda a: shutil.rmtree(a / "lora"),
        r"lists lora but it is missing",
    ),
    "bad_json": (
        "post_block",
        lambda a: (a / "steering_config.json").write_text('{"format_version": 1,'),
        r"steering_config\.json is not valid JSON",
    ),
    "config_not_an_artifact_config": (
        "post_block",
        lambda a: (a / "steering_config.json").write_text('{"format_version": 1}'),
        r"steering_config\.json is not a valid steering config: method: Field required",
    ),
    "no_config": (
        "full",
        lambda a: (a / "steering_config.json").unlink(),
        r"is not an adapter artifact: steering_config\.json is missing",
    ),
}


@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_artifact_is_refused_with_a_clear_message(
    artifacts: dict[str, Path], tmp_path: Path, damage: str
) -> None:
    name, spoil, message = DAMAGES[damage]
    artifact = _copy(artifacts, name, tmp_path)
    spoil(artifact)
    with pytest.raises(ArtifactError, match=message):
        check_artifact(artifact)


def test_cli_verify_runs_the_same_check(artifacts: dict[str, Path], tmp_path: Path) -> None:
    def verify(artifact: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "steering_core.cli", "verify", str(artifact)],
            capture_output=True,
            text=True,
            cwd=ROOT,
        )

    good = verify(artifacts["post_block"])
    assert good.returncode == 0, good.stderr
    assert json.loads(good.stdout) == check_artifact(artifacts["post_block"]).summary()
    damaged = _copy(artifacts, "post_block", tmp_path)
    _truncate(damaged / "adapter_model.safetensors")
    bad = verify(damaged)
    assert bad.returncode == ExitCode.USER_ERROR
    assert "adapter_model.safetensors is not a readable safetensors file" in bad.stderr


# --- the end of a job, through the registry ---------------------------------------------------


def _adapters(url: str) -> list[Adapter]:
    with session_scope(url) as session:
        return list(session.scalars(select(Adapter)))


def _result_files(url: str) -> list[File]:
    with session_scope(url) as session:
        return list(session.scalars(select(File).where(File.purpose == "fine-tune-results")))


def test_success_registers_the_adapter_its_copy_and_the_result_file(
    artifacts: dict[str, Path], worker_settings: Settings, leased: LeasedJob
) -> None:
    source = artifacts["post_block"]
    with session_scope(leased.url) as session:
        job = get_job(session, leased.job_id)
        for step, metrics in (
            (1, {"train_loss": 2.5, "train_mean_token_accuracy": 0.25, "learning_rate": 0.01}),
            (2, {"train_loss": 1.25, "valid_loss": 1.5, "valid_mean_token_accuracy": 0.5}),
            (3, {"learning_rate": 0.01}),  # none of the result file's: no row
        ):
            record_progress(
                session,
                job,
                step=step,
                total=3,
                trained_tokens=10,
                eta_seconds=None,
                metrics=metrics,
            )

    assert finish_job(worker_settings, leased, source, SUCCEEDED, None) == "succeeded"

    job = job_row(leased.url, leased.job_id)
    assert (job.status, job.lease_owner, job.error) == ("succeeded", None, None)
    (adapter,) = _adapters(leased.url)
    assert job.fine_tuned_model == adapter.id
    config = json.loads((source / "steering_config.json").read_text())
    assert (adapter.name, adapter.version, adapter.job_id) == ("tiny-llama-post_block", 1, job.id)
    assert adapter.trainable_parameters == config["parameters"]["trainable"]
    assert adapter.metrics == {
        **config["training_manifest"]["result"],
        "trained_by": {"method": "post_block"},
    }
    stored = worker_settings.adapters_dir / adapter.id
    assert adapter.storage_path == adapter.id
    files = sorted(p.name for p in source.iterdir())
    assert sorted(adapter.files) == sorted(p.name for p in stored.iterdir()) == files
    for name, digest in adapter.files.items():
        content = (source / name).read_bytes()
        assert (stored / name).read_bytes() == content
        assert digest == hashlib.sha256(content).hexdigest()
    assert adapter.bytes == sum((source / name).stat().st_size for name in files)

    (results,) = _result_files(leased.url)
    assert job.result_files == [results.id]
    csv = (
        b"step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy\n"
        b"1,2.5,0.25,,\n"
        b"2,1.25,,1.5,0.5\n"
    )
    sha = hashlib.sha256(csv).hexdigest()
    assert (results.filename, results.purpose, results.status) == (
        f"{job.id}-metrics.csv",
        "fine-tune-results",
        "processed",
    )
    assert (results.sha256, results.bytes) == (sha, len(csv))
    assert results.storage_path == content_path(sha, ".csv")
    assert (worker_settings.files_dir / results.storage_path).read_bytes() == csv
    last = events_of(leased.url, leased.job_id)[-1]
    assert (last.message, last.data) == (
        "The job has successfully completed",
        {"status": "succeeded"},
    )


def test_a_cancel_acknowledged_before_the_finish_wins_over_the_success(
    artifacts: dict[str, Path], worker_settings: Settings, leased: LeasedJob
) -> None:
    """The engine finished (its last look at the flag came before the cancel), then the cancel
    was acknowledged: the job ends cancelled, with no adapter, not succeeded."""
    with session_scope(leased.url) as session:
        request_cancel(session, get_job(session, leased.job_id))
    outcome = finish_job(worker_settings, leased, artifacts["post_block"], SUCCEEDED, None)
    assert outcome == "cancelled"
    assert job_row(leased.url, leased.job_id).status == "cancelled"
    assert _adapters(leased.url) == [] and _result_files(leased.url) == []


def test_a_cancel_after_the_success_is_refused(
    artifacts: dict[str, Path], worker_settings: Settings, leased: LeasedJob
) -> None:
    assert finish_job(worker_settings, leased, artifacts["post_block"], SUCCEEDED, None) == (
        "succeeded"
    )
    with session_scope(leased.url) as session, pytest.raises(InvalidJobStatus, match="succeeded"):
        request_cancel(session, get_job(session, leased.job_id))


def test_a_damaged_artifact_fails_the_job_and_registers_nothing(
    artifacts: dict[str, Path], worker_settings: Settings, leased: LeasedJob, tmp_path: Path
) -> None:
    artifact = _copy(artifacts, "post_block", tmp_path)
    _truncate(artifact / "adapter_model.safetensors")

    assert finish_job(worker_settings, leased, artifact, SUCCEEDED, None) == "failed"

    job = job_row(leased.url, leased.job_id)
    assert job.status == "failed" and job.error is not None
    assert job.error["code"] == "invalid_artifact"
    assert job.error["message"].startswith(
        "artifact verification failed: adapter_model.safetensors is not a readable safetensors file"
    )
    assert _adapters(leased.url) == []
    assert list(worker_settings.adapters_dir.iterdir()) == []


def test_a_success_whose_transaction_fails_leaves_no_stored_copy(
    artifacts: dict[str, Path], worker_settings: Settings, leased: LeasedJob
) -> None:
    """The adapter is copied into the store, then writing the result file fails (the files
    directory is not a directory): the transaction rolls back and the copy is removed."""
    shutil.rmtree(worker_settings.files_dir)
    worker_settings.files_dir.write_text("not a directory")

    outcome = finish_job(worker_settings, leased, artifacts["post_block"], SUCCEEDED, None)

    assert outcome == "failed"
    job = job_row(leased.url, leased.job_id)
    assert job.error is not None and job.error["code"] == "artifact_write_failed"
    assert job.error["message"].startswith("the adapter could not be stored: ")
    assert (job.fine_tuned_model, job.result_files) == (None, [])
    assert _adapters(leased.url) == [] and _result_files(leased.url) == []
    assert list(worker_settings.adapters_dir.iterdir()) == []


@pytest.mark.parametrize(
    ("returncode", "reported", "stderr", "code", "message"),
    [
        (
            ExitCode.USER_ERROR,
            {"error_type": "user_error", "message": "over quota", "code": "quota_exceeded"},
            [],
            "quota_exceeded",
            "over quota",
        ),
        (
            ExitCode.USER_ERROR,
            {"error_type": "user_error", "message": "line 3 is not JSON"},
            [],
            "invalid_training_data",
            "line 3 is not JSON",
        ),
        (
            ExitCode.OUT_OF_MEMORY,
            None,
            ["a", "b", "c", "d"],
            "out_of_memory",
            "training exited with code 3: b | c | d",
        ),
        (-9, None, ["Killed"], "internal_error", "training exited with code -9: Killed"),
    ],
    ids=["engine-code", "user-error", "oom-stderr", "killed"],
)
def test_a_failed_run_fails_the_job_with_its_code(
    worker_settings: Settings,
    leased: LeasedJob,
    tmp_path: Path,
    returncode: int,
    reported: dict[str, str] | None,
    stderr: list[str],
    code: str,
    message: str,
) -> None:
    error = ErrorEvent.model_validate(reported) if reported else None
    training = TrainingExit(returncode=returncode, cancelled=False, stderr_tail=stderr)
    assert finish_job(worker_settings, leased, tmp_path, training, error) == "failed"
    job = job_row(leased.url, leased.job_id)
    assert job.status == "failed"
    assert job.error == {"code": code, "message": message, "param": None}
    last = events_of(leased.url, leased.job_id)[-1]
    assert (last.message, last.level) == (f"The job failed: {message}", "error")


@pytest.mark.parametrize(
    "training",
    [
        TrainingExit(returncode=-15, cancelled=True, stderr_tail=[]),
        TrainingExit(returncode=ExitCode.CANCELLED, cancelled=False, stderr_tail=[]),
    ],
    ids=["stopped-by-the-supervisor", "exit-code"],
)
def test_a_cancelled_run_cancels_the_job(
    worker_settings: Settings, leased: LeasedJob, tmp_path: Path, training: TrainingExit
) -> None:
    assert finish_job(worker_settings, leased, tmp_path, training, None) == "cancelled"
    job = job_row(leased.url, leased.job_id)
    assert (job.status, job.error, job.lease_owner) == ("cancelled", None, None)


PAUSED = TrainingExit(returncode=ExitCode.PAUSED, cancelled=False, stderr_tail=[])


def _request_pause(leased: LeasedJob) -> None:
    with session_scope(leased.url) as session:
        request_pause(session, get_job(session, leased.job_id))


@pytest.mark.parametrize(
    "training",
    [
        PAUSED,
        # several ranks: torchrun's own failure code, the engine's end event said "paused"
        TrainingExit(returncode=1, cancelled=False, stderr_tail=[], paused=True, world_size=2),
    ],
    ids=["exit-code", "end-event"],
)
def test_a_paused_run_pauses_the_job_and_releases_its_lease(
    worker_settings: Settings, leased: LeasedJob, tmp_path: Path, training: TrainingExit
) -> None:
    _request_pause(leased)
    assert finish_job(worker_settings, leased, tmp_path, training, None) == "paused"
    job = job_row(leased.url, leased.job_id)
    assert (job.status, job.pause_requested, job.lease_owner, job.error) == (
        "paused",
        False,
        None,
        None,
    )
    assert _adapters(leased.url) == []


def test_a_cancel_during_the_pause_wins(
    worker_settings: Settings, leased: LeasedJob, tmp_path: Path
) -> None:
    _request_pause(leased)
    with session_scope(leased.url) as session:
        request_cancel(session, get_job(session, leased.job_id))
    assert finish_job(worker_settings, leased, tmp_path, PAUSED, None) == "cancelled"
    assert job_row(leased.url, leased.job_id).status == "cancelled"


def test_a_run_that_ended_before_its_pause_succeeds(
    artifacts: dict[str, Path], worker_settings: Settings, leased: LeasedJob
) -> None:
    """Asked to pause at its last step, the engine finishes: the job succeeds, not paused."""
    _request_pause(leased)
    assert finish_job(worker_settings, leased, artifacts["post_block"], SUCCEEDED, None) == (
        "succeeded"
    )
    job = job_row(leased.url, leased.job_id)
    assert (job.status, job.pause_requested) == ("succeeded", False)
