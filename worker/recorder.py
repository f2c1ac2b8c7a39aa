"""The engine's events, recorded as registry rows: one repository function per event kind.

Each write is one transaction fenced by the job's lease (a worker that lost the job records
nothing more: LeaseLost ends its supervision). The rows and messages are what the events API,
the metrics series and the dashboard read.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from registry import progress
from registry.models import Job
from steering_core.engine.events import ErrorEvent, TrainingEvent
from worker.leased_job import LeasedJob

RecordFunction = Callable[[Session, Job, Any], None]

# ``error`` has no row of its own: the job fails with its message and code once the exit code
# is known (the finisher). ``end`` tells an early stop; its other outcomes the exit code tells.
RECORDS: dict[str, RecordFunction] = {
    "start": progress.record_start,
    "step": progress.record_step,
    "eval": progress.record_evaluation,
    "checkpoint": progress.record_checkpoint,
    "layer_selection": progress.record_layer_selection,
    "end": progress.record_end,
}


class EventRecorder:
    """Records the events of one job's training run; keeps the error the engine reported."""

    def __init__(self, leased: LeasedJob):
        self.leased = leased
        self.reported_error: ErrorEvent | None = None

    def record(self, event: TrainingEvent) -> None:
        if isinstance(event, ErrorEvent):
            self.reported_error = event
            return
        record = RECORDS.get(event.event)
        if record is not None:
            self.leased.write(record, event)
