"""What every experiment tracker does with a job, and what it is told about it.

A tracker is opened once per run of the job (each attempt; a resumed job goes on in the same
W&B run or MLflow run), then gets the job's settings, its metrics step by step and, at the end,
a summary and the job's outcome. It runs in a thread of its own (``worker.trackers.relay``):
a call may block on the network without holding up the recorder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol

# Outcomes of ``worker.runner.run_job`` a run logged to a tracker ends with, and whether the
# tracker should call its run a success.
SUCCESSFUL_OUTCOMES = ("succeeded", "paused")


@dataclass(frozen=True)
class TrackedJob:
    """The job as a tracker shows it: its id, and the settings it was created with."""

    job_id: str
    model: str
    method_type: str
    config: dict[str, Any]  # nested: model, method, hyperparameters, seed, files, ...


@dataclass(frozen=True)
class TrackerOpened:
    """Where a tracker logs: the job event's message and data (run id, directory, URL)."""

    message: str
    data: dict[str, Any]
    level: str = "info"  # "warning": it logs, but not as asked (W&B offline after a failure)


@dataclass
class StepMetrics:
    """The metrics recorded at one step, in the order they were recorded."""

    step: int
    values: dict[str, float] = field(default_factory=dict)


class Tracker(Protocol):
    """One tracker for one job. Every method may raise: the relay reports the first failure as
    the job's warning event and carries on."""

    name: str  # as users know it: "W&B", "MLflow"

    def open(self, job: TrackedJob) -> TrackerOpened: ...

    def log_config(self, values: dict[str, Any]) -> None:
        """Add ``values`` (what the engine reported at its start) to the run's settings."""

    def log_metrics(self, steps: list[StepMetrics]) -> None: ...

    def close(self, summary: dict[str, Any], outcome: str) -> None: ...


def flat(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (MLflow params are flat)."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(flat(value, f"{name}."))
        else:
            out[name] = value
    return out
