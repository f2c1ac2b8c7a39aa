"""``steer jobs``: create (its options, and the job body they make), list, get, cancel, pause,
resume and watch fine-tuning jobs. Part of the user CLI (:mod:`steer.user_cli`)."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from steer.cli_common import EXIT_REFUSED, JSON, KEY, URL, client_from, console, errors
from steer.client import SteerClient
from steer.job_body import ZeroStage, build_job_body, read_recipe
from steer.output import print_json, print_record, print_table, say
from steer.views import JOB_COLUMNS, job_fields, job_row
from steer.watch import watch_job
from steering_core.methods.registry import method_names

# The --method choices: every method the registry knows (installed packages included).
MethodName = StrEnum("MethodName", {name: name for name in method_names()})

jobs_app = typer.Typer(no_args_is_help=True, help="Create, follow and cancel fine-tuning jobs")

# -- the options of ``jobs create`` -------------------------------------------------------------
Model = Annotated[str | None, typer.Option(help="base model")]
TrainingFile = Annotated[str | None, typer.Option(help="training file id, or a path to upload")]
Recipe = Annotated[Path | None, typer.Option(help="JSON/YAML job body; flags override")]
Method = Annotated[MethodName | None, typer.Option(help="the training method")]
Site = Annotated[str | None, typer.Option(help="block_output, mlp_output, attn_output")]
Layers = Annotated[str | None, typer.Option(help="e.g. 0-11 or 2,5,7; auto: the best --max-layers")]
MaxLayers = Annotated[int | None, typer.Option(help="with --layers auto: how many layers to steer")]
Rank = Annotated[int | None, typer.Option()]
Epochs = Annotated[int | None, typer.Option()]
LearningRate = Annotated[float | None, typer.Option("--lr")]
BatchSize = Annotated[int | None, typer.Option()]
Beta = Annotated[float | None, typer.Option(help="dpo: how far from the reference (default 0.1)")]
Source = Annotated[
    str | None,
    typer.Option(help="distill: the adapter to distil (id, name@version or job id)"),
]
Suffix = Annotated[str | None, typer.Option()]
Seed = Annotated[int | None, typer.Option()]
Gpus = Annotated[int | None, typer.Option(help="GPUs, one rank each (0: a CPU job)")]
Processes = Annotated[int | None, typer.Option(help="ranks (default: one per GPU, or 1 on CPU)")]
Zero = Annotated[
    ZeroStage | None, typer.Option(help="DeepSpeed ZeRO stage (auto: chosen by method)")
]
OffloadOptimizer = Annotated[
    bool | None,
    typer.Option("--offload-optimizer/--no-offload-optimizer", help="ZeRO optimizer on CPU"),
]
OffloadParam = Annotated[
    bool | None,
    typer.Option("--offload-param/--no-offload-param", help="ZeRO-3 parameters on CPU"),
]
Watch = Annotated[bool, typer.Option(help="follow the job until it ends")]


@jobs_app.command("create")
def jobs_create(
    model: Model = None,
    file: TrainingFile = None,
    recipe: Recipe = None,
    method: Method = None,
    site: Site = None,
    layers: Layers = None,
    max_layers: MaxLayers = None,
    rank: Rank = None,
    epochs: Epochs = None,
    learning_rate: LearningRate = None,
    batch_size: BatchSize = None,
    beta: Beta = None,
    source: Source = None,
    suffix: Suffix = None,
    seed: Seed = None,
    gpus: Gpus = None,
    processes: Processes = None,
    zero_stage: Zero = None,
    offload_optimizer: OffloadOptimizer = None,
    offload_param: OffloadParam = None,
    watch: Watch = False,
    as_json: JSON = False,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Create a fine-tuning job from flags and/or a recipe file."""
    if watch and as_json:
        raise typer.BadParameter("--json prints the created job: leave out --watch")
    client = client_from(url, api_key)
    body = build_job_body(
        read_recipe(recipe),
        model=model,
        training_file=file,
        method=method.value if method is not None else None,
        site=site,
        layers=layers,
        rank=rank,
        max_layers=max_layers,
        source=source,
        hyperparameters=_hyperparameters(epochs, learning_rate, batch_size, beta),
        suffix=suffix,
        seed=seed,
        compute=_compute(gpus, processes, zero_stage, offload_optimizer, offload_param),
    )
    _upload_training_file(client, file, body)
    job = client.create_job(**body)
    if as_json:
        print_json(console, job)
        return
    say(console, "[green]created[/green] ", f"{job['id']} ({job['status']})")
    if watch:
        raise typer.Exit(watch_job(client, job["id"], console, errors))


def _hyperparameters(
    epochs: int | None, learning_rate: float | None, batch_size: int | None, beta: float | None
) -> dict[str, Any]:
    """The flags' hyperparameters (None: not given)."""
    return {
        "n_epochs": epochs,
        "learning_rate": learning_rate,
        "batch_size": batch_size,
        "beta": beta,
    }


def _compute(
    gpus: int | None,
    processes: int | None,
    zero_stage: ZeroStage | None,
    offload_optimizer: bool | None,
    offload_param: bool | None,
) -> dict[str, Any]:
    """The flags' compute block (None: not given)."""
    return {
        "gpus": gpus,
        "processes": processes,
        "zero_stage": zero_stage.value if zero_stage is not None else None,
        "offload_optimizer": offload_optimizer,
        "offload_param": offload_param,
    }


def _upload_training_file(client: SteerClient, file: str | None, body: dict[str, Any]) -> None:
    """``--file`` naming a local file: upload it (after the body was checked) and train on it."""
    if file is not None and Path(file).is_file():  # checked before anything is uploaded
        uploaded = client.upload_file(file)
        if uploaded["status"] != "processed":
            say(errors, "[red]invalid file[/red]: ", str(uploaded.get("status_details")))
            raise typer.Exit(EXIT_REFUSED)
        body["training_file"] = uploaded["id"]


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option(help="the newest this many jobs")] = 20,
    as_json: JSON = False,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """The newest jobs; a finished job's adapter is shown as name@version."""
    client = client_from(url, api_key)
    jobs = client.list_jobs(limit=limit)
    if as_json:
        print_json(console, jobs)
        return
    references: dict[str, str] = {}
    if any(j.get("fine_tuned_model") for j in jobs):
        references = {a["id"]: a["reference"] for a in client.list_adapters()}
    print_table(console, JOB_COLUMNS, [job_row(j, references) for j in jobs])


@jobs_app.command("get")
def jobs_get(job_id: str, as_json: JSON = False, url: URL = None, api_key: KEY = None) -> None:
    """One job: status, progress, adapter, error."""
    job = client_from(url, api_key).get_job(job_id)
    if as_json:
        print_json(console, job)
        return
    print_record(console, job_fields(job))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    """Ask the job to stop (a running job stops at its next step)."""
    job = client_from(url, api_key).cancel_job(job_id)
    say(console, "", f"{job['id']}: {job['status']}")


@jobs_app.command("pause")
def jobs_pause(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    """Pause the job: a running job saves a checkpoint at its next step and frees its worker."""
    job = client_from(url, api_key).pause_job(job_id)
    say(console, "", f"{job['id']}: {job['status']}")


@jobs_app.command("resume")
def jobs_resume(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    """Queue a paused job again; it continues from the checkpoint it was paused at."""
    job = client_from(url, api_key).resume_job(job_id)
    say(console, "", f"{job['id']}: {job['status']}")


@jobs_app.command("watch")
def jobs_watch(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    """Live progress until the job ends (a paused job is followed until it is resumed and
    ends); exit code 0 succeeded, 1 failed, 3 cancelled."""
    raise typer.Exit(watch_job(client_from(url, api_key), job_id, console, errors))
