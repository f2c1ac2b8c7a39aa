"""The user side of ``steer``: talk to a running service (typer + rich).

    steer configure --url http://host:8000 --api-key sk-steer-...
    steer files upload train.jsonl
    steer jobs create --model smollm2-135m-instruct --file train.jsonl --method post_block \\
        --layers 0-29 --rank 8 --epochs 3 --watch
    steer jobs create ... --gpus 2 --zero-stage 2   # the job's compute block (or --processes N)
    steer jobs watch ftjob-...          # live progress; exits with the job's outcome
    steer jobs list --json | jq -r '.[] | select(.status == "running") | .id'
    steer adapters download my-adapter@1 --out adapters/
    steer adapters export my-adapter@1 --format control_vector_gguf --out my-adapter.gguf
    steer generate --model my-adapter@1 --prompt "..." --strength 0.8 --chat

Every list and get command (and ``files upload``, ``jobs create``) takes ``--json``: it prints
the API's objects as returned, one JSON document on stdout; a list prints the array of its
objects (the list's ``data``). Tables never cut an id; piped, they are plain aligned text.

Exit codes: 0 success (a watched job succeeded), 1 the job failed, 3 the job was cancelled,
2 a usage error, a request the server refused or a server it cannot reach (one line on stderr).
Settings: ``--url``/``--api-key``, else ``STEER_URL``/``STEER_API_KEY``, else the file written by
``steer configure`` (``$XDG_CONFIG_HOME/steer/config.json``).
"""

from __future__ import annotations

import json
import os
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.console import Console
from rich.markup import escape

from steer.client import SteerAPIError, SteerClient
from steer.job_body import ZeroStage, build_job_body, read_recipe
from steer.output import print_json, print_record, print_table, say
from steer.views import (
    ADAPTER_COLUMNS,
    FILE_COLUMNS,
    JOB_COLUMNS,
    adapter_fields,
    adapter_row,
    file_fields,
    file_row,
    job_fields,
    job_row,
)
from steer.watch import watch_job
from steering_core.methods.registry import method_names

try:  # recent typer carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer uses the click package
    from click.exceptions import ClickException  # type: ignore[assignment]

# The --method choices: every method the registry knows (installed packages included).
MethodName = StrEnum("MethodName", {name: name for name in method_names()})

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help=__doc__.split("\n\n")[0],
)
files_app = typer.Typer(no_args_is_help=True, help="Upload, list and show training files")
jobs_app = typer.Typer(no_args_is_help=True, help="Create, follow and cancel fine-tuning jobs")
adapters_app = typer.Typer(
    no_args_is_help=True, help="List, show, download and export trained adapters"
)
app.add_typer(files_app, name="files")
app.add_typer(jobs_app, name="jobs")
app.add_typer(adapters_app, name="adapters")
console = Console()
errors = Console(stderr=True, soft_wrap=True, highlight=False)

EXIT_REFUSED = 2
EXPORT_FORMATS = "layer_tensors, control_vector_gguf or peft_lora"
URL = Annotated[str | None, typer.Option("--url", help="service URL", show_default=False)]
KEY = Annotated[str | None, typer.Option("--api-key", help="API key", show_default=False)]
JSON = Annotated[
    bool, typer.Option("--json", help="print the API's JSON (a list: its array of objects)")
]


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "steer" / "config.json"


def _client(url: str | None, key: str | None) -> SteerClient:
    saved: dict[str, str] = {}
    if config_path().is_file():
        try:
            saved = dict(json.loads(config_path().read_text()))
        except (OSError, ValueError, TypeError) as exc:
            raise typer.BadParameter(
                f"cannot read {config_path()} ({exc}); run `steer configure` again"
            ) from None
    url = url or os.environ.get("STEER_URL") or saved.get("url") or "http://127.0.0.1:8000"
    key = key or os.environ.get("STEER_API_KEY") or saved.get("api_key")
    return SteerClient(url, key)


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
    say(console, "saved to ", str(path))


# -- files -------------------------------------------------------------------------------------
@files_app.command("upload")
def files_upload(path: Path, as_json: JSON = False, url: URL = None, api_key: KEY = None) -> None:
    """Upload a JSONL training file; validation problems are shown with their line numbers."""
    if not path.is_file():
        raise typer.BadParameter(f"no such file: {path}", param_hint="PATH")
    file = _client(url, api_key).upload_file(path)
    if as_json:
        print_json(console, file)
    if file["status"] != "processed":
        say(errors, f"[red]invalid file[/red] {file['id']}: ", str(file.get("status_details")))
        raise typer.Exit(EXIT_REFUSED)
    if not as_json:
        summary = f"{file['n_examples']} examples ({file['format']}, {file['bytes']} bytes)"
        say(console, "[green]uploaded[/green] ", f"{file['id']}: {summary}")


@files_app.command("list")
def files_list(as_json: JSON = False, url: URL = None, api_key: KEY = None) -> None:
    """The training files: id, name, status, examples, size."""
    files = _client(url, api_key).list_files()
    if as_json:
        print_json(console, files)
        return
    print_table(console, FILE_COLUMNS, [file_row(f) for f in files])


@files_app.command("get")
def files_get(file_id: str, as_json: JSON = False, url: URL = None, api_key: KEY = None) -> None:
    """One training file."""
    file = _client(url, api_key).get_file(file_id)
    if as_json:
        print_json(console, file)
        return
    print_record(console, file_fields(file))


# -- jobs --------------------------------------------------------------------------------------
@jobs_app.command("create")
def jobs_create(
    model: Annotated[str | None, typer.Option(help="base model")] = None,
    file: Annotated[str | None, typer.Option(help="training file id, or a path to upload")] = None,
    recipe: Annotated[Path | None, typer.Option(help="JSON/YAML job body; flags override")] = None,
    method: Annotated[MethodName | None, typer.Option(help="the training method")] = None,
    site: Annotated[str | None, typer.Option(help="block_output, mlp_output, attn_output")] = None,
    layers: Annotated[
        str | None, typer.Option(help="e.g. 0-11 or 2,5,7; auto: the best --max-layers")
    ] = None,
    max_layers: Annotated[
        int | None, typer.Option(help="with --layers auto: how many layers to steer")
    ] = None,
    rank: Annotated[int | None, typer.Option()] = None,
    epochs: Annotated[int | None, typer.Option()] = None,
    learning_rate: Annotated[float | None, typer.Option("--lr")] = None,
    batch_size: Annotated[int | None, typer.Option()] = None,
    beta: Annotated[
        float | None, typer.Option(help="dpo: how far from the reference (default 0.1)")
    ] = None,
    source: Annotated[
        str | None,
        typer.Option(help="distill: the adapter to distil (id, name@version or job id)"),
    ] = None,
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
    as_json: JSON = False,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Create a fine-tuning job from flags and/or a recipe file."""
    if watch and as_json:
        raise typer.BadParameter("--json prints the created job: leave out --watch")
    client = _client(url, api_key)
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
        hyperparameters={
            "n_epochs": epochs,
            "learning_rate": learning_rate,
            "batch_size": batch_size,
            "beta": beta,
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
    if file is not None and Path(file).is_file():  # checked before anything is uploaded
        uploaded = client.upload_file(file)
        if uploaded["status"] != "processed":
            say(errors, "[red]invalid file[/red]: ", str(uploaded.get("status_details")))
            raise typer.Exit(EXIT_REFUSED)
        body["training_file"] = uploaded["id"]
    job = client.create_job(**body)
    if as_json:
        print_json(console, job)
        return
    say(console, "[green]created[/green] ", f"{job['id']} ({job['status']})")
    if watch:
        raise typer.Exit(watch_job(client, job["id"], console, errors))


@jobs_app.command("list")
def jobs_list(
    limit: Annotated[int, typer.Option(help="the newest this many jobs")] = 20,
    as_json: JSON = False,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """The newest jobs; a finished job's adapter is shown as name@version."""
    client = _client(url, api_key)
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
    job = _client(url, api_key).get_job(job_id)
    if as_json:
        print_json(console, job)
        return
    print_record(console, job_fields(job))


@jobs_app.command("cancel")
def jobs_cancel(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    """Ask the job to stop (a running job stops at its next step)."""
    job = _client(url, api_key).cancel_job(job_id)
    say(console, "", f"{job['id']}: {job['status']}")


@jobs_app.command("pause")
def jobs_pause(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    """Pause the job: a running job saves a checkpoint at its next step and frees its worker."""
    job = _client(url, api_key).pause_job(job_id)
    say(console, "", f"{job['id']}: {job['status']}")


@jobs_app.command("resume")
def jobs_resume(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    """Queue a paused job again; it continues from the checkpoint it was paused at."""
    job = _client(url, api_key).resume_job(job_id)
    say(console, "", f"{job['id']}: {job['status']}")


@jobs_app.command("watch")
def jobs_watch(job_id: str, url: URL = None, api_key: KEY = None) -> None:
    """Live progress until the job ends (a paused job is followed until it is resumed and
    ends); exit code 0 succeeded, 1 failed, 3 cancelled."""
    raise typer.Exit(watch_job(_client(url, api_key), job_id, console, errors))


# -- adapters ----------------------------------------------------------------------------------
@adapters_app.command("list")
def adapters_list(as_json: JSON = False, url: URL = None, api_key: KEY = None) -> None:
    """The trained adapters: name@version, id, base model, method, size."""
    adapters = _client(url, api_key).list_adapters()
    if as_json:
        print_json(console, adapters)
        return
    print_table(console, ADAPTER_COLUMNS, [adapter_row(a) for a in adapters])


@adapters_app.command("get")
def adapters_get(
    reference: Annotated[str, typer.Argument(help="adapter id, name@version, or name (latest)")],
    as_json: JSON = False,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """One adapter: where it came from, its files and metrics."""
    adapter = _client(url, api_key).get_adapter(reference)
    if as_json:
        print_json(console, adapter)
        return
    print_record(console, adapter_fields(adapter))


@adapters_app.command("download")
def adapters_download(
    reference: str,
    out: Annotated[Path, typer.Option(help="directory to unpack into")] = Path("."),
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Download and unpack an adapter (every file checked against its sha256)."""
    root = _client(url, api_key).download_adapter(reference, out)
    say(console, "[green]downloaded[/green] ", f"{reference} to {root}")


@adapters_app.command("export")
def adapters_export(
    reference: Annotated[str, typer.Argument(help="adapter id, name@version, or name (latest)")],
    export_format: Annotated[
        str, typer.Option("--format", help=EXPORT_FORMATS, show_default=False)
    ],
    out: Annotated[
        Path | None,
        typer.Option(help="file or directory to write to; '-': stdout (default: the file's name)"),
    ] = None,
    drop_layer_0: Annotated[
        bool, typer.Option(help="control_vector_gguf: a vector that leaves layer 0 alone")
    ] = False,
    url: URL = None,
    api_key: KEY = None,
) -> None:
    """Export an adapter for another tool: a .gguf control vector for llama.cpp, or a .tar.gz
    of per-layer tensors or of a peft LoRA adapter."""
    client = _client(url, api_key)
    name, content = client.export_adapter(reference, export_format, drop_layer_0=drop_layer_0)
    if out == Path("-"):
        sys.stdout.buffer.write(content)
        sys.stdout.buffer.flush()
        return
    target = out / name if out is not None and out.is_dir() else out or Path(name)
    if not target.parent.is_dir():
        raise typer.BadParameter(f"no such directory: {target.parent}", param_hint="--out")
    partial = target.with_name(f".{target.name}.part")
    partial.write_bytes(content)  # complete, or not there at all
    partial.replace(target)
    say(console, "[green]exported[/green] ", f"{reference} ({export_format}) to {target}")


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


# -- running a command -------------------------------------------------------------------------
def _report(label: str, text: str) -> int:
    say(errors, f"[red]{escape(label)}[/red]: ", text)
    return EXIT_REFUSED


def main(argv: list[str]) -> int:
    """Run one command; whatever goes wrong ends as an exit code and a short message, never a
    traceback: usage errors as click shows them (exit 2), refusals and unreachable servers as
    one line on stderr."""
    try:
        result = app(argv, prog_name="steer", standalone_mode=False)
    except ClickException as exc:  # unknown command or option, bad value, missing argument
        exc.show()
        return exc.exit_code
    except typer.Abort:
        errors.print("Aborted!")
        return 1
    except typer.Exit as exc:
        return int(exc.exit_code)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except SteerAPIError as exc:
        what = " ".join(str(part) for part in ("error", exc.status or "", exc.code or "") if part)
        where = f" ({exc.param})" if exc.param else ""
        return _report(f"{what}{where}", exc.message)
    except httpx.TransportError as exc:
        where = str(exc.request.url) if exc._request is not None else "the service"
        return _report("error", f"cannot reach {where}: {exc}")
    except (httpx.HTTPError, httpx.InvalidURL) as exc:
        return _report("error", f"{type(exc).__name__}: {exc}")
    except OSError as exc:  # a file to read or write
        return _report("error", str(exc))
    return result if isinstance(result, int) else 0  # click returns an Exit's code
