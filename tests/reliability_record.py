"""Figures for benchmarks/reliability/results.md, written by the fault and fuzz tests themselves.

``benchmarks/reliability/run.py`` runs those tests with ``STEER_RELIABILITY_RECORD`` naming a
JSON-lines file; each test appends what it injected and what it saw. Without the variable this
does nothing, so the tests run the same either way.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

RECORD_ENV = "STEER_RELIABILITY_RECORD"


def record(kind: str, **figures: Any) -> None:
    path = os.environ.get(RECORD_ENV)
    if not path:
        return
    with open(path, "a") as handle:
        handle.write(json.dumps({"kind": kind, "time": time.time(), **figures}) + "\n")
