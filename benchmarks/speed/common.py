"""What the engine speed benchmarks share: the task files, the machine line, writing results."""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
TASKS = {
    "listops": ROOT / "data" / "tasks" / "listops_train.jsonl",
    "arithmetic": ROOT / "benchmarks" / "quality" / "data" / "arithmetic_train.jsonl",
}


def machine_and_date() -> dict[str, str]:
    return {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}",
        "date": time.strftime("%Y-%m-%d"),
    }


def write_results(
    stem: str, result: dict[str, Any], render: Callable[[dict[str, Any]], str], quick: bool
) -> None:
    """``{stem}.json`` and ``{stem}.md`` beside the scripts (``-quick`` ones are not committed)."""
    suffix = "-quick" if quick else ""
    (HERE / f"{stem}{suffix}.json").write_text(json.dumps(result, indent=1) + "\n")
    (HERE / f"{stem}{suffix}.md").write_text(render(result))
    print(render(result))
