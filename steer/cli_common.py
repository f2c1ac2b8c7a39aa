"""What every command of the user CLI (:mod:`steer.user_cli`) shares: the consoles, the
``--url``/``--api-key``/``--json`` options, and the client those settings make."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from steer.client import SteerClient

console = Console()
errors = Console(stderr=True, soft_wrap=True, highlight=False)

EXIT_REFUSED = 2
URL = Annotated[str | None, typer.Option("--url", help="service URL", show_default=False)]
KEY = Annotated[str | None, typer.Option("--api-key", help="API key", show_default=False)]
JSON = Annotated[
    bool, typer.Option("--json", help="print the API's JSON (a list: its array of objects)")
]


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "steer" / "config.json"


def client_from(url: str | None, key: str | None) -> SteerClient:
    """The client for ``--url``/``--api-key``, else ``STEER_URL``/``STEER_API_KEY``, else the
    file ``steer configure`` wrote."""
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
