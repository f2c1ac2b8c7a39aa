"""``steer jobs watch``: follow a job's event stream until the job ends.

On a terminal a live bar shows the step, the latest metrics and the time left, and every other
event (the plan with its trainable parameters, checkpoints, retries, errors) is printed above
it as the stream gives it. Elsewhere each event is one line. Either way the last line is the
outcome, naming the adapter as ``name@version`` when the job succeeded.
"""

from __future__ import annotations

from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

from steer.client import SteerAPIError, SteerClient
from steer.output import say

EXIT_SUCCEEDED, EXIT_FAILED, EXIT_CANCELLED = 0, 1, 3
SHOWN_METRICS = ("train_loss", "valid_loss", "valid_mean_token_accuracy")


def step_text(step: int, total: int | None) -> str:
    """``step 50/200``, or ``step 50`` while the total is not known."""
    return f"step {step}/{total}" if total else f"step {step}"


def watch_job(client: SteerClient, job_id: str, console: Console, errors: Console) -> int:
    """Follow the job until it ends; return the exit code its outcome calls for."""
    live = console.is_terminal
    progress = Progress(
        TextColumn("{task.fields[steps]}"),
        BarColumn(),
        TextColumn("{task.fields[metrics]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not live,
    )
    task = progress.add_task(job_id, total=None, steps="waiting", metrics="")
    metrics: dict[str, float] = {}
    total: int | None = None
    with progress:
        for event in client.stream_events(job_id):
            data: dict[str, Any] = event.get("data") or {}
            if event["type"] == "metrics" and "step" in data:
                metrics.update({k: data[k] for k in SHOWN_METRICS if data.get(k) is not None})
                shown = "  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items())
                total = data.get("total_steps") or total
                steps = step_text(data["step"], total)
                progress.update(
                    task, completed=data["step"], total=total, steps=steps, metrics=shown
                )
                if not live:
                    say(console, "", f"{steps}  {shown}".rstrip())
            elif event.get("level") == "error":
                console.print(f"[red]{escape(event['message'])}[/red]", soft_wrap=True)
            else:
                console.print(f"[dim]{escape(event['message'])}[/dim]", soft_wrap=True)
    return _outcome(client, client.get_job(job_id), console, errors)


def _outcome(client: SteerClient, job: dict[str, Any], console: Console, errors: Console) -> int:
    if job["status"] == "succeeded":
        say(console, "[green]succeeded[/green]: adapter ", _adapter_name(client, job))
        return EXIT_SUCCEEDED
    if job["status"] == "cancelled":
        say(console, "[yellow]cancelled[/yellow]: ", job["id"])
        return EXIT_CANCELLED
    if job["status"] != "failed":  # the stream ended on a status this client does not know
        say(errors, "[red]ended[/red]: ", f"{job['id']} is {job['status']}")
        return EXIT_FAILED
    error = job.get("error") or {}
    code = escape(str(error.get("code")))
    say(errors, f"[red]failed[/red] ({code}): ", str(error.get("message")))
    return EXIT_FAILED


def _adapter_name(client: SteerClient, job: dict[str, Any]) -> str:
    """``name@version (adapter-…)``; the id alone if the adapter cannot be read (deleted)."""
    adapter_id = str(job.get("fine_tuned_model") or "")
    if not adapter_id:
        return "(none recorded)"
    try:
        adapter = client.get_adapter(adapter_id)
    except SteerAPIError:
        return adapter_id
    return f"{adapter['name']}@{adapter['version']} ({adapter_id})"
