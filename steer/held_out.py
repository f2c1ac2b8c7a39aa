"""Held-out evaluation through the engine CLI, as the demo, the benchmarks and the tests run it.

Torch-free: it writes a subset file and runs ``python -m steering_core.cli evaluate`` in a
subprocess (the installed package, from any directory), so the caller's process never loads a
model.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def head_jsonl(source: Path, target: Path, n: int) -> Path:
    """The first ``n`` lines of a JSONL file, written to ``target``."""
    target.write_text("\n".join(source.read_text().splitlines()[:n]) + "\n")
    return target


def cli_evaluate(
    model: str,
    data: Path,
    task: str,
    *,
    adapter: str | Path | None = None,
    max_new_tokens: int = 12,
    out: Path | None = None,
) -> dict[str, Any]:
    """The CLI's summary (``n``, ``correct``, ``accuracy``); RuntimeError with its stderr."""
    command = [
        sys.executable,
        "-m",
        "steering_core.cli",
        "evaluate",
        "--model",
        model,
        "--data",
        str(data),
        "--task",
        task,
        "--max-new-tokens",
        str(max_new_tokens),
    ]
    if adapter is not None:
        command += ["--adapter", str(adapter)]
    if out is not None:
        command += ["--out", str(out)]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"evaluation failed ({result.returncode}):\n{result.stderr[-2000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])
