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

The ``jobs`` commands are :mod:`steer.jobs_cli`; what every command shares (consoles, common
options, the client) is :mod:`steer.cli_common`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import httpx
import typer
from rich.markup import escape

from steer.cli_common import (
    EXIT_REFUSED,
    JSON,
    KEY,
    URL,
    client_from,
    config_path,
    console,
    errors,
)
from steer.client import SteerAPIError
from steer.jobs_cli import jobs_app
from steer.output import print_json, print_record, print_table, say
from steer.views import (
    ADAPTER_COLUMNS,
    FILE_COLUMNS,
    adapter_fields,
    adapter_row,
    file_fields,
    file_row,
)

try:  # recent typer carries its own copy of click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer uses the click package
    from click.exceptions import ClickException  # type: ignore[assignment]

EXPORT_FORMATS = "layer_tensors, control_vector_gguf or peft_lora"

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    help=__doc__.split("\n\n")[0],
)
files_app = typer.Typer(no_args_is_help=True, help="Upload, list and show training files")
adapters_app = typer.Typer(
    no_args_is_help=True, help="List, show, download and export trained adapters"
)
app.add_typer(files_app, name="files")
app.add_typer(jobs_app, name="jobs")
app.add_typer(adapters_app, name="adapters")


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
    file = client_from(url, api_key).upload_file(path)
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
    files = client_from(url, api_key).list_files()
    if as_json:
        print_json(console, files)
        return
    print_table(console, FILE_COLUMNS, [file_row(f) for f in files])


@files_app.command("get")
def files_get(file_id: str, as_json: JSON = False, url: URL = None, api_key: KEY = None) -> None:
    """One training file."""
    file = client_from(url, api_key).get_file(file_id)
    if as_json:
        print_json(console, file)
        return
    print_record(console, file_fields(file))


# -- adapters ----------------------------------------------------------------------------------
@adapters_app.command("list")
def adapters_list(as_json: JSON = False, url: URL = None, api_key: KEY = None) -> None:
    """The trained adapters: name@version, id, base model, method, size."""
    adapters = client_from(url, api_key).list_adapters()
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
    adapter = client_from(url, api_key).get_adapter(reference)
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
    root = client_from(url, api_key).download_adapter(reference, out)
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
    client = client_from(url, api_key)
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
    client = client_from(url, api_key)
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
