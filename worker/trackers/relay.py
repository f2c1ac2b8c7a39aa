"""A job's experiment trackers, fed from the events the worker records, each in its own thread.

The recorder's thread only hands each event over (a queue put): a tracker that blocks on the
network never holds up recording, the lease or a cancel. Each tracker's thread wakes on what it
is handed and reads the job's metric rows recorded since it last looked, so a burst of steps is
one read and one batch, and what it logs is what the job's metrics route serves, whatever
metrics the engine reports. Its events (where it logs; its first failure, as a warning: the job
goes on without it) are written outside the job's lease: the last ones come after the job has
ended and its lease is gone.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from registry import jobs as jobs_repo
from registry.db import read_scope, session_scope
from registry.errors import LeaseLost
from registry.integrations import (
    IntegrationBlock,
    MlflowConfig,
    WandbConfig,
    integrations_of,
    last_metric_id,
    metrics_after,
)
from registry.models import Job, Metric
from registry.settings import Settings
from steering_core.engine.events import EndEvent, EvalEvent, StartEvent, StepEvent, TrainingEvent
from steering_core.spec.training_spec import Hyperparameters
from worker.leased_job import LeasedJob
from worker.trackers.base import StepMetrics, TrackedJob, Tracker
from worker.trackers.mlflow_tracker import MlflowTracker
from worker.trackers.wandb_tracker import WandbTracker

log = logging.getLogger("steer.worker")
MESSAGE_CHARS = 500  # of a tracker's error, in the job's warning event
# StartEvent fields that differ between attempts of one job (MLflow params cannot change).
START_FIELDS_LEFT_OUT = ("event", "time", "resumed_from_step")


@dataclass(frozen=True)
class _Close:
    outcome: str


_METRICS = "metrics"  # the marker: new metric rows were recorded


def group_by_step(rows: list[Metric]) -> list[StepMetrics]:
    """Consecutive rows of one step as one entry (a step's training metrics, then its
    validation's, may come in two reads: W&B merges a step logged twice)."""
    steps: list[StepMetrics] = []
    for row in rows:
        if not steps or steps[-1].step != row.step:
            steps.append(StepMetrics(step=row.step))
        steps[-1].values[row.name] = float(row.value)
    return steps


class TrackerRelay(threading.Thread):
    """One tracker of one job: opened, then fed until the job's run ends."""

    def __init__(
        self, settings: Settings, tracker: Tracker, kind: str, job: TrackedJob, after_id: int
    ):
        super().__init__(name=f"tracker-{kind}-{job.job_id}", daemon=True)
        self.settings, self.tracker, self.kind, self.job = settings, tracker, kind, job
        self.after_id = after_id  # the newest metric row already logged (or from before)
        self.inbox: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.metrics_pending = threading.Event()
        self.failed = False  # reported once; later failures go to the worker's log only
        self.engine_end: dict[str, Any] = {}

    # -- the recorder's side: hand over and return at once ------------------------------------

    def observe(self, event: TrainingEvent) -> None:
        if isinstance(event, StepEvent | EvalEvent):
            if not self.metrics_pending.is_set():
                self.metrics_pending.set()
                self.inbox.put(_METRICS)
        elif isinstance(event, StartEvent | EndEvent):
            self.inbox.put(event)

    def close(self, outcome: str) -> None:
        self.inbox.put(_Close(outcome))

    # -- the tracker's thread -----------------------------------------------------------------

    def run(self) -> None:
        try:
            opened = self.tracker.open(self.job)
        except Exception as exc:
            self._report_failure(f"could not start: {_brief(exc)}", exc)
            return
        self._add_event(opened.message, level=opened.level, data=opened.data)
        while True:
            items = [self.inbox.get()]
            while True:
                try:
                    items.append(self.inbox.get_nowait())
                except queue.Empty:
                    break
            closing = next((item for item in items if isinstance(item, _Close)), None)
            for item in items:
                if isinstance(item, StartEvent):
                    facts = item.model_dump(mode="json", exclude=set(START_FIELDS_LEFT_OUT))
                    self._guarded("logging the run's settings", self.tracker.log_config, facts)
                elif isinstance(item, EndEvent):
                    self.engine_end = item.model_dump(
                        mode="json", exclude={"event", "time", "artifact"}
                    )
            if closing is not None or _METRICS in items:
                self.metrics_pending.clear()
                self._guarded("logging metrics", self._log_new_metrics)
            if closing is not None:
                self._guarded("closing the run", self._close, closing.outcome)
                return

    def _log_new_metrics(self) -> None:
        with read_scope(self.settings.resolved_database_url) as session:
            rows = metrics_after(session, self.job.job_id, self.after_id)
            if not rows:
                return
            steps = group_by_step(rows)
            newest = rows[-1].id
        self.tracker.log_metrics(steps)
        self.after_id = newest

    def _close(self, outcome: str) -> None:
        self.tracker.close(self._summary(outcome), outcome)

    def _summary(self, outcome: str) -> dict[str, Any]:
        with read_scope(self.settings.resolved_database_url) as session:
            job = session.get(Job, self.job.job_id)
            recorded: dict[str, Any] = {"outcome": outcome}
            if job is not None:
                recorded.update(
                    status=job.status,
                    fine_tuned_model=job.fine_tuned_model,
                    trained_tokens=job.trained_tokens,
                    step=job.current_step,
                    total_steps=job.total_steps,
                    error=(job.error or {}).get("code"),
                )
        summary = {**self.engine_end, **recorded}
        return {key: value for key, value in summary.items() if value is not None}

    def _guarded(self, doing: str, fn: Callable[..., None], *args: Any) -> None:
        try:
            fn(*args)
        except Exception as exc:
            self._report_failure(f"failed {doing}: {_brief(exc)}", exc)

    def _report_failure(self, what: str, exc: Exception) -> None:
        if self.failed:
            log.warning("job %s: %s %s", self.job.job_id, self.tracker.name, what)
            return
        log.warning("job %s: %s %s", self.job.job_id, self.tracker.name, what, exc_info=exc)
        self.failed = True
        self._add_event(
            f"{self.tracker.name} integration {what}; the job goes on without it",
            level="warning",
            data={"integration": self.kind, "error": _brief(exc)},
        )

    def _add_event(self, message: str, *, level: str, data: dict[str, Any]) -> None:
        _add_event(self.settings, self.job.job_id, message, level=level, data=data)


def _add_event(
    settings: Settings, job_id: str, message: str, *, level: str, data: dict[str, Any]
) -> None:
    """The job's event, outside its lease (a tracker's last words come after the job ended)."""
    try:
        with session_scope(settings.resolved_database_url) as session:
            jobs_repo.add_event(session, job_id, message, level=level, data=data)
    except Exception:
        log.exception("job %s: cannot record the event %r", job_id, message)


def _brief(exc: Exception) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def tracked_job(job: Job) -> TrackedJob:
    """The job's settings as its trackers show them: what it was created with (its
    hyperparameters with their defaults; what ``"auto"`` became, the engine reports at its start:
    :meth:`TrackerRelay.observe` logs that as ``run``)."""
    hyperparameters = Hyperparameters.model_validate(job.hyperparameters or {})
    compute = job.compute or {}
    config = {
        "job_id": job.id,
        "model": job.model,
        "method": job.method,
        "hyperparameters": hyperparameters.model_dump(mode="json"),
        "seed": job.seed,
        "training_file": job.training_file,
        "validation_file": job.validation_file,
        "suffix": job.suffix,
        "compute": {key: compute.get(key) for key in ("gpus", "processes", "deepspeed")},
    }
    return TrackedJob(
        job_id=job.id, model=job.model, method_type=str(job.method["type"]), config=config
    )


def tracker_for(block: IntegrationBlock, settings: Settings, job_dir: Path) -> Tracker:
    config = block.config
    if isinstance(config, WandbConfig):
        return WandbTracker(config, settings, job_dir)
    if isinstance(config, MlflowConfig):
        return MlflowTracker(config, settings)
    raise ValueError(f"no tracker for integration type {block.type!r}")


class JobTrackers:
    """The trackers of one run of a job: started after the claim, fed every recorded event,
    closed with the run's outcome."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.relays: list[TrackerRelay] = []

    def start(self, leased: LeasedJob, job_dir: Path) -> None:
        def read(session: Any, job: Job) -> tuple[list[IntegrationBlock], TrackedJob | None, int]:
            if not job.integrations:
                return [], None, 0
            blocks = integrations_of(job.integrations)
            return blocks, tracked_job(job), last_metric_id(session, job.id)

        try:
            blocks, job, after_id = leased.read(read)
        except LeaseLost:
            raise
        except Exception as exc:  # a tracker never fails the job, not even its settings
            log.exception("job %s: cannot read its integrations", leased.job_id)
            _add_event(
                self.settings,
                leased.job_id,
                f"The job's integrations could not be read: {_brief(exc)}; it goes on without them",
                level="warning",
                data={"error": _brief(exc)},
            )
            return
        if job is None:
            return
        for index, block in enumerate(blocks):
            tracker = tracker_for(block, self.settings, job_dir)
            relay = TrackerRelay(self.settings, tracker, block.type, job, after_id)
            relay.start()
            self.relays.append(relay)
            log.info("job %s: integration %d logs to %s", job.job_id, index, tracker.name)

    def following(self, record: Callable[[TrainingEvent], None]) -> Callable[[TrainingEvent], None]:
        """``record``, then each tracker handed the event it recorded."""
        if not self.relays:
            return record

        def record_and_relay(event: TrainingEvent) -> None:
            record(event)
            for relay in self.relays:
                relay.observe(event)

        return record_and_relay

    def close(self, outcome: str) -> None:
        """Hand the outcome over and wait for the trackers, at most ``tracker_close_seconds``
        in all; one still busy then goes on in the background."""
        for relay in self.relays:
            relay.close(outcome)
        deadline = time.monotonic() + self.settings.tracker_close_seconds
        for relay in self.relays:
            relay.join(timeout=max(0.0, deadline - time.monotonic()))
            if relay.is_alive():
                log.warning("job %s: %s still logging; not waiting", relay.job.job_id, relay.name)
