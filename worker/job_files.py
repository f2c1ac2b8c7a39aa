"""What a job's directory keeps once the job has succeeded.

The adapter itself is in the adapter store by then, and nothing will resume the run. Each
checkpoint still listed keeps what users download and serve: its adapter artifact
(``checkpoints/step-N/adapter/``), or, for a method that trains the base weights (no separate
artifact), its weights (``trainable.safetensors``). Optimizer state, RNG state, DeepSpeed's
engine checkpoints, the saved adapter's copy and the ranks' logs go. ``spec.json`` stays: it
says what ran.
"""

from __future__ import annotations

import shutil
from pathlib import Path


def tidy_after_success(job_dir: Path) -> None:
    run = job_dir / "run"
    shutil.rmtree(run / "adapter", ignore_errors=True)
    shutil.rmtree(job_dir / "ranks", ignore_errors=True)
    checkpoints = run / "checkpoints"
    for checkpoint in checkpoints.iterdir() if checkpoints.is_dir() else []:
        if checkpoint.name.endswith(".partial"):
            shutil.rmtree(checkpoint, ignore_errors=True)
            continue
        keep = "adapter" if (checkpoint / "adapter").is_dir() else "trainable.safetensors"
        for entry in checkpoint.iterdir():
            if entry.name == keep:
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
