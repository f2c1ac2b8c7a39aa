"""The API's objects as people see them in ``steer``: table columns and rows for the list
commands, named fields for the get commands (``--json`` prints the objects themselves)."""

from __future__ import annotations

from typing import Any

from steer.output import Column, unix_time
from steer.watch import step_text

FILE_COLUMNS = (
    Column("id", is_id=True),
    Column("filename"),
    Column("status"),
    Column("examples"),
    Column("bytes"),
)
JOB_COLUMNS = (
    Column("id", is_id=True),
    Column("model"),
    Column("method"),
    Column("status"),
    Column("progress"),
    Column("adapter", is_id=True),
)
ADAPTER_COLUMNS = (
    Column("reference", is_id=True),
    Column("id", is_id=True),
    Column("base model"),
    Column("method"),
    Column("parameters"),
    Column("bytes"),
)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def progress_text(job: dict[str, Any]) -> str:
    """``40%``, or ``step 50`` while the total is not known."""
    progress = job.get("progress") or {}
    if progress.get("percent") is not None:
        return f"{progress['percent']:.0f}%"
    if progress.get("step"):
        return step_text(progress["step"], progress.get("total_steps"))
    return ""


def file_row(file: dict[str, Any]) -> list[str]:
    return [
        file["id"],
        file["filename"],
        file["status"],
        _text(file.get("n_examples")),
        _text(file["bytes"]),
    ]


def job_row(job: dict[str, Any], references: dict[str, str]) -> list[str]:
    """``references``: adapter id -> ``name@version``, for the adapter column."""
    adapter = job.get("fine_tuned_model") or ""
    return [
        job["id"],
        job["model"],
        job["method"]["type"],
        job["status"],
        progress_text(job),
        references.get(adapter, adapter),
    ]


def adapter_row(adapter: dict[str, Any]) -> list[str]:
    return [
        adapter["reference"],
        adapter["id"],
        adapter["base_model"],
        adapter["method"]["type"],
        _text(adapter.get("trainable_parameters")),
        _text(adapter["bytes"]),
    ]


def file_fields(file: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        ("id", file["id"]),
        ("filename", file["filename"]),
        ("status", file["status"]),
        ("details", _text(file.get("status_details"))),
        ("format", _text(file.get("format"))),
        ("examples", _text(file.get("n_examples"))),
        ("bytes", _text(file["bytes"])),
        ("created", unix_time(file.get("created_at"))),
    ]


def job_fields(job: dict[str, Any]) -> list[tuple[str, str]]:
    error = job.get("error") or {}
    return [
        ("id", job["id"]),
        ("status", job["status"]),
        ("model", job["model"]),
        ("method", job["method"]["type"]),
        ("training file", _text(job.get("training_file"))),
        ("validation file", _text(job.get("validation_file"))),
        ("progress", progress_text(job)),
        ("trained tokens", _text(job.get("trained_tokens"))),
        ("adapter", _text(job.get("fine_tuned_model"))),
        ("error", f"{error.get('code')}: {error.get('message')}" if error else ""),
        ("created", unix_time(job.get("created_at"))),
        ("estimated finish", unix_time(job.get("estimated_finish"))),
        ("finished", unix_time(job.get("finished_at"))),
    ]


def adapter_fields(adapter: dict[str, Any]) -> list[tuple[str, str]]:
    metrics = adapter.get("metrics") or {}
    return [
        ("reference", adapter["reference"]),
        ("id", adapter["id"]),
        ("base model", adapter["base_model"]),
        ("method", adapter["method"]["type"]),
        ("job", _text(adapter.get("job_id"))),
        ("parameters", _text(adapter.get("trainable_parameters"))),
        ("bytes", _text(adapter["bytes"])),
        ("sha256", adapter["sha256"]),
        ("files", ", ".join(sorted(adapter.get("files") or {}))),
        ("metrics", ", ".join(f"{name} {value}" for name, value in sorted(metrics.items()))),
        ("created", unix_time(adapter.get("created_at"))),
    ]
