"""Experiment trackers (W&B, MLflow) a job's ``integrations`` ask for, logged to from the
worker process as it records the job's events; never from the training ranks."""

from worker.trackers.relay import JobTrackers

__all__ = ["JobTrackers"]
