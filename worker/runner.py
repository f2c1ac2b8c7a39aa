"""Running one job: claim it, launch the engine CLI, turn its events into registry rows.

The task that calls :func:`run_job` is thin; everything that decides what happens is here:

- claim with a lease (a fencing token); a duplicate or re-delivered message finds the job held
  and returns at once;
- launch ``python -m steering_core.cli train`` in its own process group (it dies with the worker:
  PR_SET_PDEATHSIG), resuming from the job's last checkpoint when one exists;
- pump its JSON lines into events, progress, metrics and checkpoint rows, every write fenced by
  the token; renew the lease; stop the process group within seconds of a cancel request;
- on exit 0 verify the artifact (``cli verify``), store it with sha256, register the adapter and
  mark the job succeeded; map other exit codes to failure types.
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import hashlib
import io
import json
import logging
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.exc import InterfaceError, OperationalError

from registry import adapters as adapters_repo
from registry import files as files_repo
from registry import jobs as jobs_repo
from registry import quotas
from registry.db import session_scope
from registry.errors import LeaseLost
from registry.settings import Settings
from registry.states import JobStatus
from steering_core.events import parse_event
from steering_core.exit_codes import ExitCode
from steering_core.spec import TrainingSpec
from worker.artifacts import store_artifact

log = logging.getLogger("steer.worker")
KILL_GRACE_SECONDS = 8.0

FAILURES = {
    ExitCode.USER_ERROR: "invalid_training_data",
    ExitCode.OUT_OF_MEMORY: "out_of_memory",
    ExitCode.INTERNAL_ERROR: "internal_error",
}


def _die_with_parent() -> None:
    os.setsid()
    with contextlib.suppress(OSError):  # Linux: SIGKILL it when the worker that started it dies
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)


class JobRunner:
    def __init__(self, settings: Settings, job_id: str, owner: str):
        self.settings, self.job_id, self.owner = settings, job_id, owner
        self.url = settings.resolved_database_url
        self.token: int | None = None
        self.job_dir = settings.jobs_dir / job_id
        self.last_error: str | None = None
        self.last_error_code: str | None = None
        self.stderr_tail: deque[str] = deque(maxlen=40)
        self.cancelled = False

    # -- registry writes, all fenced, retried while the database is unreachable -------------
    def _retrying(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn`` (one transaction), retrying it while the database cannot be reached, for up
        to ``db_retry_seconds``. A transaction that failed was rolled back, so retrying it
        cannot half-write anything."""
        deadline = time.monotonic() + self.settings.db_retry_seconds
        delay = 0.25
        while True:
            try:
                return fn()
            except (OperationalError, InterfaceError) as exc:
                if time.monotonic() + delay > deadline:
                    log.error("job %s: the database stayed unreachable: %s", self.job_id, exc)
                    raise
                log.warning("job %s: database unreachable, retrying in %.1fs", self.job_id, delay)
                time.sleep(delay)
                delay = min(delay * 2, 5.0)

    def _write(self, fn) -> Any:
        def transaction() -> Any:
            with session_scope(self.url) as session:
                job = jobs_repo.fenced_job(session, self.job_id, self.token)
                return fn(session, job)

        return self._retrying(transaction)

    def claim(self) -> bool:
        with session_scope(self.url) as session:
            self.token = jobs_repo.claim_job(
                session, self.job_id, self.owner, self.settings.lease_seconds
            )
        return self.token is not None

    def write_spec(self) -> Path:
        def build(session, job) -> TrainingSpec:
            train = files_repo.get_file(session, job.training_file)
            validation = (
                files_repo.get_file(session, job.validation_file) if job.validation_file else None
            )
            every = self.settings.checkpoint_every_n_steps
            return TrainingSpec.model_validate(
                {
                    "model": job.model,
                    "method": job.method,
                    "hyperparameters": job.hyperparameters,
                    "seed": job.seed,
                    "train_file": str(self.settings.files_dir / train.storage_path),
                    "validation_file": (
                        str(self.settings.files_dir / validation.storage_path)
                        if validation
                        else None
                    ),
                    "checkpoint_every_n_steps": every,
                    "max_training_tokens": quotas.quotas_for(
                        session, self.settings, job.tenant_id
                    ).max_training_tokens,
                    "eval_every_n_steps": every if validation else None,
                }
            )

        spec = self._write(build)
        self.job_dir.mkdir(parents=True, exist_ok=True)
        path = self.job_dir / "spec.json"
        path.write_text(spec.model_dump_json(indent=1))
        return path

    # -- the subprocess ------------------------------------------------------------------------
    def launch(self, spec_path: Path) -> subprocess.Popen:
        out = self.job_dir / "run"
        command = [sys.executable, "-m", "steering_core.cli"]
        if self.settings.model_cache_dir is not None:
            command += ["--cache-dir", str(self.settings.model_cache_dir)]
        command += ["train", "--spec", str(spec_path), "--out", str(out)]
        if (out / "checkpoints").is_dir():
            command.append("--resume")
        env = dict(os.environ)
        for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
            env.pop(name, None)
        if self.settings.torch_threads:
            env["OMP_NUM_THREADS"] = str(self.settings.torch_threads)
        env["PYTHONUNBUFFERED"] = "1"
        return subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            preexec_fn=_die_with_parent,
            cwd=str(self.job_dir),
        )

    def _pump(self, stream, sink: queue.Queue | None) -> None:
        for line in stream:
            if sink is not None:
                sink.put(line)
            else:
                self.stderr_tail.append(line.rstrip())
        if sink is not None:
            sink.put(None)

    def handle(self, event: Any) -> None:
        kind = event.event
        if kind == "start":

            def start(session, job):
                job.total_steps = event.total_steps
                jobs_repo.add_event(
                    session,
                    job.id,
                    f"Training {event.n_examples} examples for {event.total_steps} steps "
                    f"({event.trainable_parameters:,} trainable parameters, "
                    f"{event.trainable_percent:.3f}%)"
                    + (
                        f", resumed from step {event.resumed_from_step}"
                        if event.resumed_from_step
                        else ""
                    ),
                    data=event.model_dump(mode="json"),
                )

            self._write(start)
        elif kind == "step":

            def step(session, job):
                metrics = {
                    "train_loss": event.loss,
                    "learning_rate": event.learning_rate,
                    "tokens_per_second": event.tokens_per_second,
                }
                jobs_repo.record_progress(
                    session,
                    job,
                    step=event.step,
                    total=event.total_steps,
                    trained_tokens=event.trained_tokens,
                    eta_seconds=event.eta_seconds,
                    metrics=metrics,
                )
                jobs_repo.add_event(
                    session,
                    job.id,
                    f"Step {event.step}/{event.total_steps}: training loss={event.loss:.4f}",
                    type="metrics",
                    data={"step": event.step, **metrics, "total_steps": event.total_steps},
                )

            self._write(step)
        elif kind == "eval":

            def evaluation(session, job):
                if event.validation_loss is not None:
                    jobs_repo.record_progress(
                        session,
                        job,
                        step=event.step,
                        total=job.total_steps or event.step,
                        trained_tokens=job.trained_tokens or 0,
                        eta_seconds=None,
                        metrics={"valid_loss": event.validation_loss},
                    )
                jobs_repo.add_event(
                    session,
                    job.id,
                    f"Step {event.step}: validation loss={event.validation_loss}",
                    type="metrics",
                    data={"step": event.step, "valid_loss": event.validation_loss},
                )

            self._write(evaluation)
        elif kind == "checkpoint":

            def checkpoint(session, job):
                jobs_repo.add_checkpoint(
                    session, job, step=event.step, path=event.path, metrics={"step": event.step}
                )
                jobs_repo.add_event(session, job.id, f"Checkpoint saved at step {event.step}")

            self._write(checkpoint)
        elif kind == "error":
            self.last_error, self.last_error_code = event.message, event.code

    def start_keeping_lease(self) -> None:
        self.keeper = LeaseKeeper(self)
        self.keeper.start()

    def renew(self) -> bool:
        def transaction() -> bool:
            with session_scope(self.url) as session:
                return jobs_repo.renew_lease(
                    session, self.job_id, self.token, self.settings.lease_seconds
                )

        return bool(self._retrying(transaction))

    def supervise(self, proc: subprocess.Popen) -> int:
        """Follow the training process to its end; if following it fails (the lease was lost,
        the database stayed down), the process group is killed before the error propagates:
        no training outlives the worker's interest in it."""
        try:
            return self._follow(proc)
        except BaseException:
            self._kill(proc)
            raise

    def _follow(self, proc: subprocess.Popen) -> int:
        lines: queue.Queue = queue.Queue()
        threading.Thread(target=self._pump, args=(proc.stdout, lines), daemon=True).start()
        threading.Thread(target=self._pump, args=(proc.stderr, None), daemon=True).start()
        kill_at = None
        stdout_open = True
        while True:
            now = time.monotonic()
            if self.keeper.lost.is_set():
                log.warning("job %s: lease lost, stopping", self.job_id)
                raise LeaseLost(f"lease {self.token} on job {self.job_id} is no longer held")
            if self.keeper.cancel_requested.is_set() and kill_at is None:
                self.cancelled = True
                log.info("job %s: cancel requested, stopping training", self.job_id)
                os.killpg(proc.pid, signal.SIGTERM)
                kill_at = now + KILL_GRACE_SECONDS
            if kill_at is not None and now >= kill_at and proc.poll() is None:
                self._kill(proc)
            try:
                line = lines.get(timeout=0.2) if stdout_open else None
            except queue.Empty:
                line = ""
            if line is None:
                stdout_open = False
                if proc.poll() is not None:
                    return proc.wait()
                time.sleep(0.1)
                continue
            event = parse_event(line) if line else None
            if event is not None:
                self.handle(event)

    @staticmethod
    def _kill(proc: subprocess.Popen) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)

    # -- finishing -----------------------------------------------------------------------------
    def verify(self, artifact: Path) -> None:
        result = subprocess.run(
            [sys.executable, "-m", "steering_core.cli", "verify", str(artifact)],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"artifact verification failed: {result.stderr.strip()[-500:]}")

    def succeed(self, artifact: Path) -> None:
        """Store the artifact and register it, in one transaction with the job's success. A
        stored copy whose transaction did not commit is removed, so the adapter store never
        holds a directory without its row (nor a row without its files)."""
        config = json.loads((artifact / "steering_config.json").read_text())
        stored: list[Path] = []

        def discard_stored() -> None:
            while stored:
                shutil.rmtree(stored.pop(), ignore_errors=True)

        def register(session, job):
            discard_stored()  # left by an attempt whose commit failed
            name = job.suffix or f"{job.model}-{job.method['type']}"
            adapter = adapters_repo.create_adapter(
                session,
                tenant_id=job.tenant_id,
                name=name,
                job_id=job.id,
                base_model=job.model,
                method=job.method,
                storage_path="pending",
                sha256="",
                bytes=0,
                files={},
                trainable_parameters=config["parameters"]["trainable"],
                metrics=(config.get("training_manifest") or {}).get("result"),
            )
            target = self.settings.adapters_dir / adapter.id
            files, digest, size = store_artifact(artifact, target)
            stored.append(target)
            adapter.storage_path, adapter.sha256, adapter.bytes, adapter.files = (
                adapter.id,
                digest,
                size,
                files,
            )
            results = self._results_file(session, job)
            job.fine_tuned_model = adapter.id
            job.result_files = [results.id]
            jobs_repo.set_status(session, job, JobStatus.SUCCEEDED)
            return target

        try:
            self._write(register)
        except OSError as exc:
            discard_stored()
            log.error("job %s: storing the artifact failed: %s", self.job_id, exc)
            self.fail("artifact_write_failed", f"the adapter could not be stored: {exc}")
        except BaseException:
            discard_stored()
            raise

    def _results_file(self, session, job):
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(["step", "name", "value"])
        for metric in jobs_repo.metrics_of(session, job.id):
            writer.writerow([metric.step, metric.name, metric.value])
        data = buffer.getvalue().encode()
        sha = hashlib.sha256(data).hexdigest()
        path = self.settings.files_dir / sha[:2] / f"{sha}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        return files_repo.create_file(
            session,
            tenant_id=job.tenant_id,
            filename=f"{job.id}-metrics.csv",
            purpose="fine-tune-results",
            bytes=len(data),
            sha256=sha,
            storage_path=str(path.relative_to(self.settings.files_dir)),
            status="processed",
        )

    def fail(self, code: str, message: str) -> None:
        def mark(session, job):
            jobs_repo.set_status(
                session,
                job,
                JobStatus.FAILED,
                error={"code": code, "message": message, "param": None},
            )

        self._write(mark)

    def finish(self, returncode: int) -> str:
        if self.cancelled or returncode == ExitCode.CANCELLED:

            def cancel(session, job):
                jobs_repo.set_status(session, job, JobStatus.CANCELLED)

            self._write(cancel)
            return "cancelled"
        if returncode == ExitCode.OK:
            artifact = self.job_dir / "run" / "adapter"
            try:
                self.verify(artifact)
            except RuntimeError as exc:
                self.fail("invalid_artifact", str(exc))
                return "failed"
            self.succeed(artifact)
            return "succeeded"
        code = self.last_error_code or FAILURES.get(returncode, "internal_error")  # type: ignore[call-overload]
        message = self.last_error or (
            f"training exited with code {returncode}: " + " | ".join(list(self.stderr_tail)[-3:])
        )
        self.fail(code, message)
        return "failed"


class LeaseKeeper(threading.Thread):
    """Renews the job's lease every third of its length from claim to the last write, in its
    own thread: neither a burst of events nor a slow artifact check can let it lapse. It sets
    ``cancel_requested`` when a cancel arrives and ``lost`` when another worker took over."""

    def __init__(self, runner: JobRunner):
        super().__init__(name=f"lease-{runner.job_id}", daemon=True)
        self.runner = runner
        self.every = max(0.2, runner.settings.lease_seconds / 3)
        self.stopping = threading.Event()
        self.cancel_requested = threading.Event()
        self.lost = threading.Event()

    def run(self) -> None:
        while not self.stopping.wait(self.every):
            try:
                if self.runner.renew():
                    self.cancel_requested.set()
            except LeaseLost:
                self.lost.set()
                return
            except Exception as exc:  # the database stayed down past the retry window
                log.error("job %s: cannot renew the lease: %s", self.runner.job_id, exc)
                self.lost.set()
                return

    def stop(self) -> None:
        self.stopping.set()
        self.join(timeout=10)


def run_job(settings: Settings, job_id: str, owner: str) -> str:
    """Run one job to its end; returns what happened (for logs and tests)."""
    runner = JobRunner(settings, job_id, owner)
    if not runner.claim():
        log.info("job %s: not claimable (held, finished or cancelled): skipping", job_id)
        return "skipped"
    log.info("job %s: claimed by %s (lease token %s)", job_id, owner, runner.token)
    runner.start_keeping_lease()
    outcome = "lease_lost"
    try:
        proc = runner.launch(runner.write_spec())
        outcome = runner.finish(runner.supervise(proc))
        return outcome
    except LeaseLost:
        return outcome
    finally:
        runner.keeper.stop()
        log.info("job %s: %s", job_id, outcome)
