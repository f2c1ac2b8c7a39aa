"""The job state machine: the one place that says which status may follow which."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    VALIDATING_FILES = "validating_files"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    PAUSED = "paused"


TERMINAL = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})
# Statuses in which no worker holds the job: a status change into one of them clears the lease.
UNLEASED = TERMINAL | {JobStatus.QUEUED, JobStatus.PAUSED}
# What a user may pause: a queued job at once, a running one at its next step boundary.
PAUSABLE = frozenset({JobStatus.QUEUED, JobStatus.RUNNING})

ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.VALIDATING_FILES: frozenset(
        {JobStatus.QUEUED, JobStatus.FAILED, JobStatus.CANCELLED}
    ),
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.PAUSED}
    ),
    # running -> queued: the lease expired (worker died) and the job goes back for another try;
    # running -> paused: the engine saved a checkpoint and stopped, its worker released the job
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.QUEUED,
            JobStatus.SUCCEEDED,
            JobStatus.FAILED,
            JobStatus.CANCELLED,
            JobStatus.PAUSED,
        }
    ),
    # paused -> queued: resumed, it continues from the checkpoint it was paused at
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.SUCCEEDED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


class InvalidTransition(Exception):
    def __init__(self, current: str, new: str):
        super().__init__(f"a job cannot go from {current!r} to {new!r}")
        self.current, self.new = current, new


def check_transition(current: str, new: str) -> None:
    if JobStatus(new) not in ALLOWED[JobStatus(current)]:
        raise InvalidTransition(current, new)
