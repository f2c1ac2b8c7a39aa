"""What the API and the workers agree on about the message broker (neither imports the other)."""

from __future__ import annotations

from typing import Any

from registry.settings import Settings

RUN_JOB_TASK = "steer.run_job"


def queue_for(gpus: int) -> str:
    """CPU jobs go to ``cpu``; a job that needs N GPUs to ``gpuN`` (only workers with ≥N GPUs
    consume it)."""
    return "cpu" if gpus <= 0 else f"gpu{gpus}"


def celery_config(settings: Settings) -> dict[str, Any]:
    config: dict[str, Any] = {
        "broker_url": settings.resolved_broker_url,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": "cpu",
        "task_ignore_result": True,
        "broker_connection_retry_on_startup": True,
        "worker_hijack_root_logger": False,
    }
    if settings.broker_url is None:  # embedded: kombu's filesystem transport, no server
        folder = settings.broker_folder
        config["broker_transport_options"] = {
            "data_folder_in": str(folder / "in"),
            "data_folder_out": str(folder / "in"),
            "processed_folder": str(folder / "processed"),
            "control_folder": str(folder / "control"),
            "store_processed": False,
        }
    else:
        # Redis re-delivers unacked messages after this; the job lease, not the message,
        # decides who runs a job, so a re-delivery can never run it twice.
        # kombu sweeps for overdue messages every interval x throttle seconds (100 s by
        # default); sweep often enough that the visibility timeout means what it says.
        visibility = settings.broker_visibility_timeout
        config["broker_transport_options"] = {
            "visibility_timeout": visibility,
            "unacked_restore_interval": max(1, min(10, int(visibility // 2))),
            "unacked_restore_throttle": 1,
        }
    return config
