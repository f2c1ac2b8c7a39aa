"""MLflow: one run per job in the job's experiment, found again by its ``steer.job_id`` tag when
the job resumes; the job's settings as params, every metric at its step, tags, and the run's
final status (FINISHED, FAILED, KILLED; SCHEDULED while the job is paused).

The tracking URI is checked again here with this worker's settings (a local store under
``STEER_MLFLOW_FILE_ROOT``, or an allowed http(s) server): the API's check ran with its own.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from registry.integrations import MlflowConfig, allowed_tracking_uri
from registry.settings import Settings
from worker.trackers.base import StepMetrics, TrackedJob, TrackerOpened, flat

DEFAULT_EXPERIMENT = "Default"  # MLflow's own
JOB_TAG = "steer.job_id"
MAX_PARAM_LENGTH = 6000  # MLflow refuses longer values
BATCH = 1000  # MLflow's limit of metrics in one log_batch
# Usage telemetry off; a server that is down fails a call in seconds, not MLflow's minutes of
# retries (each is the worker's default only: its own environment may set them).
ENVIRONMENT = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
STATUSES = {"succeeded": "FINISHED", "failed": "FAILED", "cancelled": "KILLED"}


def _param_value(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    return text[:MAX_PARAM_LENGTH]


class MlflowTracker:
    name = "MLflow"

    def __init__(self, config: MlflowConfig, settings: Settings):
        self.config, self.settings = config, settings
        self.client: Any = None
        self.run_id = ""

    def open(self, job: TrackedJob) -> TrackerOpened:
        uri = allowed_tracking_uri(
            self.config.tracking_uri,
            file_root=self.settings.resolved_mlflow_file_root,
            allowed_hosts=self.settings.mlflow_allowed_hosts,
            param="mlflow.tracking_uri",
        )
        for name, value in ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        if uri.startswith("file:"):
            # MLflow 3 keeps its file store behind this switch; the operator allowed its root.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        from mlflow.tracking import MlflowClient  # here: only a job that asks needs it

        self.client = MlflowClient(tracking_uri=uri)
        experiment_name = self.config.experiment_name or DEFAULT_EXPERIMENT
        experiment_id = self._experiment(experiment_name)
        found = self.client.search_runs(
            [experiment_id], filter_string=f"tags.`{JOB_TAG}` = '{job.job_id}'", max_results=1
        )
        if found:  # the job resumed: its run goes on
            self.run_id = found[0].info.run_id
            self.client.update_run(self.run_id, status="RUNNING")
        else:
            tags = {
                **(self.config.tags or {}),
                JOB_TAG: job.job_id,
                "steer.model": job.model,
                "steer.method": job.method_type,
            }
            run = self.client.create_run(
                experiment_id, run_name=self.config.run_name or job.job_id, tags=tags
            )
            self.run_id = run.info.run_id
        self._log_params(job.config)
        return TrackerOpened(
            message=f"MLflow run {self.run_id} in experiment {experiment_name!r} at {uri}",
            data={
                "integration": "mlflow",
                "tracking_uri": uri,
                "experiment_id": experiment_id,
                "run_id": self.run_id,
            },
        )

    def _experiment(self, name: str) -> str:
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return str(experiment.experiment_id)
        try:
            return str(self.client.create_experiment(name))
        except Exception:  # another job created it meanwhile
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return str(experiment.experiment_id)

    def _log_params(self, values: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(key, _param_value(v)) for key, v in flat(values).items()]
        for start in range(0, len(params), 100):  # MLflow's limit of params in one batch
            self.client.log_batch(self.run_id, params=params[start : start + 100])

    def log_config(self, values: dict[str, Any]) -> None:
        self._log_params({"run": values})

    def log_metrics(self, steps: list[StepMetrics]) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        metrics = [
            Metric(name, float(value), now, metrics.step)
            for metrics in steps
            for name, value in metrics.values.items()
        ]
        for start in range(0, len(metrics), BATCH):
            self.client.log_batch(self.run_id, metrics=metrics[start : start + BATCH])

    def close(self, summary: dict[str, Any], outcome: str) -> None:
        from mlflow.entities import RunTag

        tags = [RunTag(f"steer.{key}", _param_value(v)) for key, v in flat(summary).items()]
        self.client.log_batch(self.run_id, tags=tags)
        if outcome == "paused":
            self.client.update_run(self.run_id, status="SCHEDULED")  # it resumes in this run
        elif outcome in STATUSES:
            self.client.set_terminated(self.run_id, status=STATUSES[outcome])
        # lease_lost: another worker goes on with the job, and with its run
