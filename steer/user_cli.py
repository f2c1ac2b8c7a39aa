"""The user side of ``steer``: talk to a running service (typer + rich).

    steer configure --url http://host:8000 --api-key sk-steer-...
    steer files upload train.jsonl
    steer jobs create --model smollm2-135m-instruct --file train.jsonl --method post_block \\
        --layers 0-29 --rank 8 --epochs 3 --watch
    steer jobs create ... --gpus 2 --zero-stage 2   # the job's compute block (or --processes N)
    steer jobs watch ftjob-...          # live progress; exits with the job's outcome
    steer adapters download my-adapter@1 --out adapters/
    steer generate --model my-adapter@1 --prompt "..." --strength 0.8 --chat

Exit codes: 0 success (a watched job succeeded), 1 the job failed, 3 the job was cancelled,
2 a request the server refused (its message is shown) or a usage error.
Settings: ``--url``/``--api-key``, else ``STEER_URL``/``STEER_API_KEY``, else the file written by
``steer configure`` (``$XDG_CONFIG_HOME/steer/config.json``).
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from steer.client import SteerAPIError, SteerClient
from steering_core.methods.registry import method_definition, method_names

# The --method choices: every method the registry knows (installed packages included).
MethodName = StrEnum("MethodName", {name: name for name in method_names()})

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help=__doc__.split("\n\n")[0],
)
files_app = typer.Typer(no_args_is_help=True, help="Upload and list training files")
jobs_app = typer.Typer(no_args_is_help=True, help="Create, follow and cancel fine-tuning jobs")
adapters_app = typer.Typer(no_args_is_help=True, help="List and download trained adapters")
app.add_typer(files_app, name="files")
app.add_typer(jobs_app, name="jobs")
app.add_typer(adapters_app, name="adapters")
console = Console()
errors = Console(stderr=True)

EXIT_FAILED, EXIT_REFUSED, EXIT_CANCELLED = 1, 2, 3
URL = Annotated[str | None, typer.Option("--url", help="service URL", show_default=False)]
KEY = Annotated[str | None, typer.Option("--api-key", help="API key", show_default=False)]


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "steer" / "config.json"


def _client(url: str | None, key: str | None) -> SteerClient:
    saved: dict[str, str] = {}
    if config_path().is_file():
        saved = json.loads(config_path().read_text())
    url = url or os.environ.get("STEER_URL") or saved.get("url") or "http://127.0.0.1:8000"
    key = key or os.environ.get("STEER_API_KEY") or saved.get("api_key")
    return SteerClient(url, key)


def _refused(exc: SteerAPIError) -> typer.Exit:
    where = f" ({exc.param})" if exc.param else ""
    errors.print(f"[red]error[/red] {exc.status} {exc.code}{where}: {exc.message}")
    return typer.Exit(EXIT_REFUSED)


def _print_json(data: Any) -> None:
    console.print_json(json.dumps(data))


@app.command()
def configure(
    url: Annotated[str, typer.Option("--url", help="service URL")],
    api_key: Annotated[str | None, typer.Option("--api-key", help="API key")] = None,
) -> None:
    """Remember the service URL and API key for later commands."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"url": url, "api_key": api_key}))
    path.chmod(0o600)
    console.print(f"saved to {path}")


# -- files -------------------------------------------------------------------------------------
@files_app.command("upload")
def files_upload(path: Path, url: URL = None, api_key: KEY = None) -> None:
    """Upload a JSONL training file; validation problems are shown with their line numbers."""
    if not path.is_file():
        errors.print(f"[red]error[/red]: no such file: {path}")
        raise typer.Exit(EXIT_REFUSED)
    try:
        file = _client(url, api_key).upload_file(path)
    except SteerAPIError as exc:
        raise _refused(exc) from None
    if file["status"] != "processed":
        errors.print(f"[red]invalid file[/red] {file['id']}: {file.get('status_details')}")
        raise typer.Exit(EXIT_REFUSED)
    console.print(
        f"[green]uploaded[/green] {file['id']}: {file['n_examples']} examples "
        f"({file['format']}, {file['bytes']} bytes)"
    )


@files_app.command("list")
def files_list(url: URL = None, api_key: KEY = None) -> None:
    table = Table("id", "filename", "status", "examples", "bytes")
    for f in _client(url, api_key).list_files():
        table.add_row(f["id"], f["filename"], f["status"], str(f["n_examples"]), str(f["bytes"]))
    console.print(table)


# -- jobs --------------------------------------------------------------------------------------
def _layers(text: str | None) -> list[int] | None:
    if not text:
        return None
    layers: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        layers += list(range(int(first), int(last) + 1)) if last else [int(first)]
    return layers


def _recipe(path: Path | None) -> dict[str, Any]:
    if path is None:
        return {}
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return dict(yaml.safe_load(text) or {})
    return dict(json.loads(text))


def _rank_field(method: str) -> str:
    """The dotted path ``--rank`` sets: the method's first rank field (its registration says)."""
    fields = method_definition(method).rank_fields
    if not fields:
        raise typer.BadParameter(f"the {method} method has no rank", param_hint="--rank")
    return fields[0]


def _set_field(block: dict[str, Any], path: str, value: Any) -> None:
    """``block["adapter"]["rank"] = value`` for ``path="adapter.rank"``, keeping the rest."""
    *parents, name = path.split(".")
    for parent in parents:
        block = block.setdefault(parent, {})
    block[name] = value


class ZeroStage(StrEnum):
    auto = "auto"
    zero = "0"
    one = "1"
    two = "2"
    three = "3"


def _compute_block(body: dict[str, Any], flags: dict[str, Any]) -> None:
    """Layer the ``--gpus --processes --zero-stage --offload-*`` flags (None: not given) on the
    recipe's ``compute`` block. ``--gpus`` replaces a recipe's top-level ``gpus`` shorthand."""
    given = {k: v for k, v in flags.items() if v is not None}
    if not given:
        return
    block = dict(body.get("compute") or {})
    for key in ("gpus", "processes"):
        if key in given:
            block[key] = given[key]
    if "gpus" in given:
        body.pop("gpus", None)
    deepspeed = {
        key: value
        for key, value in given.items()
        if key in ("zero_stage", "offload_optimizer", "offload_param")
    }
    if "zero_stage" in deepspeed:  # "auto", or a stage's number
        stage = str(deepspeed["zero_stage"])
        deepspeed["zero_stage"] = stage if stage == "auto" else int(stage)
    if deepspeed:
        block["deepspeed"] = {**(block.get("deepspeed") or {}), **deepspeed}
    body["compute"] = block


def build_job_body(
    recipe: dict[str, Any],
    *,
    model: str | None,
    training_file: str | None,
    method: str | None,
    site: str | None,
    layers: str | None,
    rank: int | None,
    hyperparameters: dict[str, Any],
    suffix: str | None,
    seed: int | None,
    compute: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A job body from a recipe (the API's own JSON shape) with flags layered on top
    (``compute``: the compute flags by field name, None where not given)."""
    body = dict(recipe)
    _compute_block(body, compute or {})
    for key, value in (
        ("model", model),
        ("training_file", training_file),
        ("suffix", suffix),
        ("seed", seed),
    ):
        if value is not None:
            body[key] = value
    block_in = dict(body.get("method") or {"type": "post_block"})
    kind = method or block_in.get("type", "post_block")
    inner = dict(block_in.get(kind) or {}) if block_in.get("type") == kind else {}
    if site or layers:
        inner["site"] = {
            **inner.get("site", {}),
            **({"name": site} if site else {}),
            **({"layers": _layers(layers)} if layers else {}),
        }
    if rank is not None:
        _set_field(inner, _rank_field(kind), rank)
    given = {k: v for k, v in hyperparameters.items() if v is not None}
    if given:
        inner["hyperparameters"] = {**inner.get("hyperparameters", {}), **given}
    body["method"] = {"type": kind, **({kind: inner} if inner else {})}
    return body


@jobs_app.command("create")
def jobs_create(
    model: Annotated[str | None, typer.Option(help="base model")] = None,
    file: Annotated[str | None, typer.Option(help="training file id, or a path to upload")] = None,
    recipe: Annotated[Path | None, typer.Option(help="JSON/YAML job body; flags override")] = None,
    method: Annotated[MethodName | None, typer.Option(help="the training method")] = None,
    site: Annotated[str | None, typer.Option(help="block_output, mlp_output, attn_output")] = None,
    layers: Annotated[str | None, typer.Option(help="e.g. 0-11 or 2,5,7")] = None,
    rank: Annotated[int | None, typer.Option()] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    suffix: Annotated[str | None, typer.Option()] = None,
    seed: Annotated[int | None, typer.Option()] = None,
    gpus: Annotated[int | None, typer.Option(help="GPUs, one rank each (0: a CPU job)")] = None,
    processes: Annotated[
        int | None, typer.Option(help="ranks (default: one per GPU, or 1 on CPU)")
    ] = None,
    zero_stage: Annotated[
        ZeroStage | None, typer.Option(help="DeepSpeed ZeRO stage (auto: chosen by method)")
    ] = None,
    offload_optimizer: Annotated[
        bool | None,
        typer.Option("--offload-optimizer/--no-offload-optimizer", help="ZeRO optimizer on CPU"),
    ] = None,
    offload_param: Annotated[
        bool | None,
        typer.Option("--offload-param/--no-offload-param", help="ZeRO-3 parameters on CPU"),
    ] = None,
    watch: Annotated[bool, typer.Option(help="follow the job until it ends")] = False,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Create a fine-tuning job from flags and/or a recipe file."""
    client = _client(url, api_key)
    try:
        if file is not None and Path(file).is_file():
            uploaded = client.upload_file(file)
            if uploaded["status"] != "processed":
                errors.print(f"[red]invalid file[/red]: {uploaded.get('status_details')}")
                raise typer.Exit(EXIT_REFUSED)
            file = uploaded["id"]
        body = build_job_body(
            _recipe(recipe),
            model=model,
            training_file=file,
            method=method.value if method is not None else None,
            site=site,
            layers=layers,
            rank=rank,
            hyperparameters={
                "n_epochs": epochs,
                "learning_rate": learning_rate,
                "batch_size": batch_size,
            },
            suffix=suffix,
            seed=seed,
            compute={
                "gpus": gpus,
                "processes": processes,
                "zero_stage": zero_stage.value if zero_stage is not None else None,
                "offload_optimizer": offload_optimizer,
                "offload_param": offload_param,
            },
        )
        job = client.create_job(**body)
    except SteerAPIError as exc:
        raise _refused(exc) from None
    console.print(f"[green]created[/green] {job['id']} ({job['status']})")
    if watch:
        _watch(client, job["id"])


@jobs_app.command("list")
def jobs_list(limit: int = 20, url: URL = None, api_key: KEY = None) -> None:
    table = Table("id", "model", "method", "status", "progress", "adapter")
    for j in _client(url, api_key).list_jobs(limit=limit):
        progress = j.get("progress") or {}
        table.add_row(
            j["id"],
            j["model"],
            j["method"]["type"],
            j["status"],
            f"{progress.get('percent') or 0:.0f}%",
            j.get("fine_tuned_model") or "",
        )
    console.print(table)


@jobs_app.command("get")
def jobs_get(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    try:
        _print_json(_client(url, api_key).get_job(job_id))
    except SteerAPIError as exc:
        raise _refused(exc) from None


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    try:
        job = _client(url, api_key).cancel_job(job_id)
    except SteerAPIError as exc:
        raise _refused(exc) from None
    console.print(f"{job['id']}: {job['status']}")


def _watch(client: SteerClient, job_id: str) -> None:
    """Follow the job's events: a live bar on a terminal, a line per step otherwise; exit with
    the job's outcome."""
    live = console.is_terminal
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[steps]}"),
        TextColumn("{task.fields[metrics]}"),
        TimeRemainingColumn(),
        console=console,
        disable=not live,
    )
    task = progress.add_task(job_id, total=None, steps="", metrics="")
    metrics: dict[str, float] = {}
    with progress:
        for event in client.stream_events(job_id):
            data = event.get("data") or {}
            if event["type"] == "metrics" and "step" in data:
                for name in ("train_loss", "valid_loss", "valid_accuracy"):
                    if data.get(name) is not None:
                        metrics[name] = data[name]
                shown = "  ".join(f"{k.replace('_', ' ')} {v:.4f}" for k, v in metrics.items())
                total = data.get("total_steps")
                steps = f"step {data['step']}/{total}"
                progress.update(
                    task, completed=data["step"], total=total, steps=steps, metrics=shown
                )
                if not live:
                    console.print(f"{steps}  {shown}")
            elif not live or event["level"] == "error":
                console.print(f"[dim]{event['message']}[/dim]")
    job = client.get_job(job_id)
    if job["status"] == "succeeded":
        console.print(f"[green]succeeded[/green]: adapter {job['fine_tuned_model']}")
        return
    if job["status"] == "cancelled":
        console.print(f"[yellow]cancelled[/yellow]: {job_id}")
        raise typer.Exit(EXIT_CANCELLED)
    error = job.get("error") or {}
    errors.print(f"[red]failed[/red] ({error.get('code')}): {error.get('message')}")
    raise typer.Exit(EXIT_FAILED)


@jobs_app.command("watch")
def jobs_watch(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    """Live progress until the job ends; exit code 0 succeeded, 1 failed, 3 cancelled."""
    try:
        _watch(_client(url, api_key), job_id)
    except SteerAPIError as exc:
        raise _refused(exc) from None


# -- adapters ----------------------------------------------------------------------------------
@adapters_app.command("list")
def adapters_list(url: URL = None, api_key: KEY = None) -> None:
    table = Table("reference", "id", "base model", "method", "parameters", "bytes")
    for a in _client(url, api_key).list_adapters():
        table.add_row(
            a["reference"],
            a["id"],
            a["base_model"],
            a["method"]["type"],
            str(a.get("trainable_parameters") or ""),
            str(a["bytes"]),
        )
    console.print(table)


@adapters_app.command("download")
def adapters_download(
    reference: str,
    out: Annotated[Path, typer.Option(help="directory to unpack into")] = Path("."),
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Download and unpack an adapter (every file checked against its sha256)."""
    try:
        root = _client(url, api_key).download_adapter(reference, out)
    except SteerAPIError as exc:
        raise _refused(exc) from None
    console.print(f"[green]downloaded[/green] {reference} to {root}")


# -- generation ----------------------------------------------------------------------------------
@app.command()
def generate(
    model: Annotated[str, typer.Option(help="base model, or adapter id / name@version")],
    prompt: Annotated[str, typer.Option()],
    chat: Annotated[bool, typer.Option(help="send as a chat message")] = False,
    strength: Annotated[float, typer.Option(help="steering strength (1: as trained)")] = 1.0,
    max_tokens: Annotated[int, typer.Option()] = 64,
    temperature: Annotated[float, typer.Option()] = 0.0,
    stream: Annotated[bool, typer.Option(help="print as it is generated (chat)")] = False,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Generate text with a base model or a trained adapter."""
    client = _client(url, api_key)
    options = {"max_tokens": max_tokens, "temperature": temperature, "steering_strength": strength}
    try:
        if stream:
            messages = [{"role": "user", "content": prompt}]
            for piece in client.stream_chat(model, messages, **options):
                sys.stdout.write(piece)
                sys.stdout.flush()
            sys.stdout.write("\n")
        elif chat:
            print(client.chat(model, [{"role": "user", "content": prompt}], **options))
        else:
            print(client.complete(model, prompt, **options))
    except SteerAPIError as exc:
        raise _refused(exc) from None


def main(argv: list[str]) -> int:
    try:
        result = app(argv, prog_name="steer", standalone_mode=False)
        if isinstance(result, int):  # click returns an Exit's code when not standalone
            return result
    except typer.Exit as exc:
        return int(exc.exit_code)
    except SystemExit as exc:
        return int(exc.code or 0)
    except httpx.TransportError as exc:
        url = exc.request.url if exc._request is not None else "the service"
        errors.print(f"[red]error[/red]: cannot reach {url}: {exc}")
        return EXIT_REFUSED
    except Exception as exc:  # click usage errors and the like
        import click

        if isinstance(exc, click.ClickException):
            exc.show()
            return EXIT_REFUSED
        raise
    return 0
