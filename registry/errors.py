"""Registry errors. The API maps them to HTTP in one table (``api/errors.py``)."""

from __future__ import annotations


class RegistryError(Exception):
    pass


class NotFound(RegistryError):
    def __init__(self, kind: str, identifier: str, reason: str | None = None):
        message = f"no {kind} with id {identifier!r}"
        super().__init__(f"{message}: {reason}" if reason else message)
        self.kind, self.identifier = kind, identifier


class Conflict(RegistryError):
    """The request conflicts with the current state (cancelling a finished job, ...)."""


class InvalidJobStatus(Conflict):
    """The job's status does not allow what was asked (cancelling a finished job, resuming one
    that is not paused): the caller's mistake, which retrying cannot fix. The message names
    the status."""

    def __init__(self, job_id: str, status: str, message: str):
        super().__init__(message)
        self.job_id, self.status = job_id, status


class LeaseLost(RegistryError):
    """This worker no longer holds the job's lease (another worker took it over)."""


class InvalidValue(RegistryError):
    """The database cannot hold a value of the request (a NUL in text, a number beyond a
    column's range, text that is not valid Unicode): the caller's mistake, never an outage.
    ``registry.db`` raises it in place of the driver's error."""
