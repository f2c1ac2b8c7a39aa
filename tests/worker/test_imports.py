"""The layering, checked in fresh processes: the worker process never imports torch (its training
subprocess does) nor the API; the registry imports neither the API, the worker nor torch; the
API never imports the worker."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
REGISTRY_MODULES = sorted(
    f"registry.{p.stem}" for p in (ROOT / "registry").glob("*.py") if p.stem != "__init__"
)


def _imported(modules: list[str], watched: tuple[str, ...]) -> list[str]:
    """Which of ``watched`` (top-level packages) importing ``modules`` pulls in."""
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted(m for m in {watched!r} if m in sys.modules)))"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, cwd=ROOT, check=True
    )
    return json.loads(result.stdout)


@pytest.mark.parametrize(
    ("modules", "forbidden"),
    [
        (["worker.celery_app", "worker.runner", "worker.reconciler"], ("torch", "api")),
        (REGISTRY_MODULES, ("torch", "api", "worker", "steering_core")),
        (["api.app"], ("torch", "worker")),
    ],
    ids=["worker", "registry", "api"],
)
def test_a_layer_imports_only_what_it_may(modules: list[str], forbidden: tuple[str, ...]) -> None:
    assert _imported(modules, forbidden) == []
