"""The end of a job's run: cancelled, paused (its checkpoint saved; a cancel that came meanwhile
wins), failed with a code that tells whose fault, or succeeded.

Success is one transaction: adapter row + stored copy + result file + status. The artifact is
checked first, in this process and without torch (``steering_core.artifact.check``: config,
listed files, safetensors headers and shapes); a stored copy whose transaction did not commit is
removed, so the adapter store never holds a directory without its row (nor a row without its
files). A store that cannot take the copy (disk full) fails the job ``artifact_write_failed``.
"""

from __future__ import annotations

import csv
import io
import logging
import shutil
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session

from registry import adapters as adapters_repo
from registry import files as files_repo
from registry import jobs as jobs_repo
from registry import progress, storage
from registry.models import File, Job
from registry.settings import Settings
from registry.states import JobStatus
from steering_core.artifact.check import CheckedArtifact, check_artifact
from steering_core.engine.events import ErrorEvent
from steering_core.errors import ArtifactError
from steering_core.exit_codes import ExitCode
from worker.job_files import tidy_after_success
from worker.leased_job import LeasedJob
from worker.supervisor import TrainingExit

log = logging.getLogger("steer.worker")
RESULTS_SUFFIX = ".csv"
STDERR_LINES_IN_MESSAGE = 3

ERROR_EXIT_CODES: dict[str, int] = {
    "user_error": ExitCode.USER_ERROR,
    "out_of_memory": ExitCode.OUT_OF_MEMORY,
    "internal_error": ExitCode.INTERNAL_ERROR,
}
# Failure codes by exit code, when the engine reported no finer one (``quota_exceeded``, ...).
FAILURES: dict[int, str] = {
    ExitCode.USER_ERROR: "invalid_training_data",
    ExitCode.OUT_OF_MEMORY: "out_of_memory",
    ExitCode.INTERNAL_ERROR: "internal_error",
}


def trained_by(method: dict[str, Any]) -> dict[str, Any]:
    """How an adapter was trained, kept with it: the job's method (dpo and distill train an
    adapter of another method's kind) and, for distill, the source adapter's id."""
    return {
        "method": method["type"],
        **({"source": method["source"]} if "source" in method else {}),
    }


def finish_job(
    settings: Settings,
    leased: LeasedJob,
    artifact: Path,
    training: TrainingExit,
    reported_error: ErrorEvent | None,
) -> str:
    """Record how the job's run ended; returns "cancelled", "paused", "succeeded" or
    "failed"."""
    if training.cancelled or training.returncode == ExitCode.CANCELLED:
        leased.write(jobs_repo.set_status, JobStatus.CANCELLED)
        return "cancelled"
    if training.paused or training.returncode == ExitCode.PAUSED:
        return leased.write(jobs_repo.pause_stopped).value
    if training.returncode == ExitCode.OK:
        try:
            checked = check_artifact(artifact)
        except ArtifactError as exc:
            fail_job(leased, "invalid_artifact", f"artifact verification failed: {exc}")
            return "failed"
        outcome = register_success(settings, leased, checked)
        if outcome == "succeeded":
            tidy_after_success(settings.jobs_dir / leased.job_id)
        return outcome
    code, message = failure(training, reported_error)
    fail_job(leased, code, message)
    return "failed"


def failure(training: TrainingExit, reported_error: ErrorEvent | None) -> tuple[str, str]:
    """The failure's code and message. With several ranks, the rank the launcher saw fail first
    is named, in its own words when it reported an error (the others fail after it, waiting on
    it), else in the launcher's (a rank killed by a signal reports nothing), with its last
    lines of stderr. Otherwise the engine's own words, or the exit code and stderr."""
    code = FAILURES.get(training.returncode, "internal_error")
    errors = dict(training.rank_errors)
    if reported_error is not None:
        errors[0] = reported_error
    if training.world_size > 1:
        rank, account = first_failed_rank(training.stderr_tail)
        where = f"rank {rank} of {training.world_size}"
        if rank is not None and rank in errors:
            return _error_code(errors[rank], code), f"{where}: {errors[rank].message}"
        if rank is not None:
            lines = training.rank_stderr.get(rank, [])
            tail = " | ".join(lines[-STDERR_LINES_IN_MESSAGE:])
            return code, f"{where} failed first ({account or 'no account'})" + (
                f": {tail}" if tail else ""
            )
    if errors:  # the earliest error a rank reported
        rank, first = min(errors.items(), key=lambda item: item[1].time)
        where = f"rank {rank} of {training.world_size}: " if training.world_size > 1 else ""
        return _error_code(first, code), where + (
            first.message or f"exit code {training.returncode}"
        )
    message = f"training exited with code {training.returncode}: " + " | ".join(
        training.stderr_tail[-STDERR_LINES_IN_MESSAGE:]
    )
    return code, message


def _error_code(error: ErrorEvent, fallback: str) -> str:
    """The engine's finer code, else the one its kind of error maps to."""
    return error.code or FAILURES.get(ERROR_EXIT_CODES.get(error.error_type, -1), fallback)


def first_failed_rank(launcher_lines: list[str]) -> tuple[int | None, str | None]:
    """torchrun's summary of a failed run names the rank that failed first ("Root Cause"), its
    exit code and, for a signal, which one: (rank, "exitcode: ...; traceback: ...")."""
    rank: int | None = None
    details: list[str] = []
    in_root_cause = False
    for line in launcher_lines:
        text = line.strip()
        if text.startswith("Root Cause"):
            in_root_cause, rank, details = True, None, []
            continue
        if not in_root_cause or ":" not in text:
            continue
        key, _, value = (part.strip() for part in text.partition(":"))
        if key == "rank" and rank is None:
            rank = int(value.split()[0]) if value.split()[0].isdigit() else None
        elif key in ("exitcode", "traceback") and value and not value.startswith("<N/A>"):
            details.append(f"{key}: {value}")
    return rank, "; ".join(details) or None


def fail_job(leased: LeasedJob, code: str, message: str) -> None:
    error = {"code": code, "message": message, "param": None}
    leased.write(jobs_repo.set_status, JobStatus.FAILED, error=error)


def register_success(settings: Settings, leased: LeasedJob, artifact: CheckedArtifact) -> str:
    """Store the artifact and register it, in one transaction with the job's success."""
    config = artifact.config
    stored: list[Path] = []

    def discard_stored() -> None:
        while stored:
            shutil.rmtree(stored.pop(), ignore_errors=True)

    cancelled = False

    def register(session: Session, job: Job) -> None:
        nonlocal cancelled
        discard_stored()  # left by an attempt whose commit failed
        if job.cancel_requested:  # acknowledged after the engine's last look: it wins
            cancelled = True
            jobs_repo.set_status(session, job, JobStatus.CANCELLED)
            return
        adapter = adapters_repo.create_adapter(
            session,
            tenant_id=job.tenant_id,
            name=job.suffix or f"{job.model}-{job.method['type']}",
            job_id=job.id,
            base_model=job.model,
            # the artifact's: layers chosen by the engine (site.layers "auto") are listed
            method=config.method.model_dump(mode="json"),
            storage_path="pending",
            sha256="",
            bytes=0,
            files={},
            trainable_parameters=config.parameters.trainable,
            metrics={
                **((config.training_manifest or {}).get("result") or {}),
                "trained_by": trained_by(job.method),
            },
        )
        target = settings.adapters_dir / adapter.id
        copy = storage.store_artifact(artifact.directory, target)
        stored.append(target)
        adapter.storage_path, adapter.sha256 = adapter.id, copy.sha256
        adapter.bytes, adapter.files = copy.bytes, copy.files
        results = record_results_file(session, settings.files_dir, job)
        job.fine_tuned_model = adapter.id
        job.result_files = [results.id]
        jobs_repo.set_status(session, job, JobStatus.SUCCEEDED)

    try:
        leased.write(register)
    except OSError as exc:
        discard_stored()
        log.error("job %s: storing the artifact failed: %s", leased.job_id, exc)
        fail_job(leased, "artifact_write_failed", f"the adapter could not be stored: {exc}")
        return "failed"
    except BaseException:
        discard_stored()
        raise
    return "cancelled" if cancelled else "succeeded"


# OpenAI's result file: its columns, each from the job's metric of that name.
RESULT_COLUMNS = {
    "train_loss": "train_loss",
    "train_accuracy": "train_mean_token_accuracy",
    "valid_loss": "valid_loss",
    "valid_mean_token_accuracy": "valid_mean_token_accuracy",
}


def results_csv(session: Session, job: Job) -> bytes:
    """``step,train_loss,train_accuracy,valid_loss,valid_mean_token_accuracy``: one row per
    step with any of them, a cell left empty where its metric was not measured (a step without
    a validation), each value as the metrics route gives it."""
    by_step: dict[int, dict[str, float]] = {}
    for metric in progress.metrics_of(session, job.id):  # the newest row of a (step, name) wins
        by_step.setdefault(metric.step, {})[metric.name] = metric.value
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["step", *RESULT_COLUMNS])
    for step, values in sorted(by_step.items()):
        cells = [values.get(name) for name in RESULT_COLUMNS.values()]
        if any(cell is not None for cell in cells):
            writer.writerow([step, *("" if cell is None else repr(cell) for cell in cells)])
    return buffer.getvalue().encode()


def record_results_file(session: Session, files_dir: Path, job: Job) -> File:
    """The job's metrics as OpenAI's results CSV (``result_files``, purpose
    ``fine-tune-results``), stored content-addressed like an upload, under the same content
    lock."""
    stored = storage.store_content(session, files_dir, results_csv(session, job), RESULTS_SUFFIX)
    return files_repo.create_file(
        session,
        tenant_id=job.tenant_id,
        filename=f"{job.id}-metrics.csv",
        purpose=files_repo.RESULTS_PURPOSE,
        bytes=stored.bytes,
        sha256=stored.sha256,
        storage_path=stored.storage_path,
        status="processed",
    )
