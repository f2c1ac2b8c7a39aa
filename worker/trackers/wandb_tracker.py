"""Weights & Biases: one run per job, whose id is the job's id (a resumed job goes on in it).

Online when the worker has a W&B API key and reaches W&B's server (``STEER_WANDB_MODE=auto``,
the default) or when told so; offline otherwise: the run is then a directory,
``<dir>/wandb/offline-run-<time>-<job id>/``, that ``wandb sync`` uploads later. The run gets
the job's settings as its config, every metric at its step, and a summary of the job's end.

Nothing about the server goes with it: no console capture, system metrics, machine metadata,
package list, code or git state (W&B collects them by default).
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from registry.integrations import WandbConfig
from registry.settings import Settings
from worker.trackers.base import SUCCESSFUL_OUTCOMES, StepMetrics, TrackedJob, TrackerOpened

# W&B reports its own crashes to its error tracker by default; a self-hosted service does not.
QUIET_ENVIRONMENT = {"WANDB_ERROR_REPORTING": "false", "WANDB_SILENT": "true"}
DEFAULT_SERVER = "https://api.wandb.ai"
REACH_SECONDS = 5.0


class WandbTracker:
    name = "W&B"

    def __init__(self, config: WandbConfig, settings: Settings, job_dir: Path):
        self.config, self.settings = config, settings
        self.directory = settings.wandb_dir or job_dir
        self.run: Any = None

    def mode(self) -> tuple[str, str]:
        """Online or offline, and why it is offline when online was meant."""
        if self.settings.wandb_mode != "auto":
            return self.settings.wandb_mode, ""
        if not os.environ.get("WANDB_API_KEY"):
            return "offline", ""
        # An online start that cannot reach W&B blocks for its whole timeout, then leaves the
        # run's id taken in W&B's service, so an offline start for the same run cannot follow.
        server = os.environ.get("WANDB_BASE_URL") or DEFAULT_SERVER
        reached = _reachable(server)
        return ("online", "") if reached is None else ("offline", f"{server} {reached}")

    def open(self, job: TrackedJob) -> TrackerOpened:
        for name, value in QUIET_ENVIRONMENT.items():
            os.environ.setdefault(name, value)
        import wandb  # here: seconds to import, and only a job that asks for W&B needs it

        mode, unreachable = self.mode()
        self.run = self._init(wandb, job, mode)
        run_dir = str(self.run.settings.sync_dir)
        data = {"integration": "wandb", "mode": mode, "run_id": self.run.id, "run_dir": run_dir}
        if mode == "online":
            data["url"] = self.run.url
            return TrackerOpened(message=f"W&B run {self.run.id}: {self.run.url}", data=data)
        note = f" (W&B is not reachable from the worker: {unreachable})" if unreachable else ""
        return TrackerOpened(
            message=f"W&B run {self.run.id} is written offline to {run_dir}{note}; "
            f"upload it with `wandb sync {run_dir}`",
            data=data,
            level="warning" if unreachable else "info",
        )

    def _init(self, wandb: Any, job: TrackedJob, mode: str) -> Any:
        self.directory.mkdir(parents=True, exist_ok=True)
        return wandb.init(
            project=self.config.project,
            entity=self.config.entity,
            name=self.config.name or job.job_id,
            id=job.job_id,
            tags=self.config.tags,
            config=job.config,
            job_type="fine-tuning",
            dir=str(self.directory),
            mode=mode,
            resume="allow",
            reinit="create_new",  # a worker runs several jobs, each its own run, at once
            settings=wandb.Settings(
                console="off",
                host="steering-service",  # not the worker machine's name
                silent=True,
                save_code=False,
                disable_code=True,
                disable_git=True,
                x_disable_stats=True,
                x_disable_meta=True,
                x_disable_machine_info=True,
                x_save_requirements=False,
                init_timeout=self.settings.tracker_close_seconds,
                finish_timeout=self.settings.tracker_close_seconds,
            ),
        )

    def log_config(self, values: dict[str, Any]) -> None:
        self.run.config.update({"run": values}, allow_val_change=True)

    def log_metrics(self, steps: list[StepMetrics]) -> None:
        # A step logged again (validation after training at the same step) is merged into it.
        for metrics in steps:
            self.run.log(metrics.values, step=metrics.step)

    def close(self, summary: dict[str, Any], outcome: str) -> None:
        self.run.summary.update({"job": summary})
        self.run.finish(exit_code=0 if outcome in SUCCESSFUL_OUTCOMES else 1)


def _reachable(url: str) -> str | None:
    """None when a connection to ``url``'s host opens, else why not."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=REACH_SECONDS):
            return None
    except OSError as exc:
        return f"cannot be reached ({exc})"
