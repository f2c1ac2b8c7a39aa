"""The machine-wide lock that timing benchmarks hold while they measure.

Two busy processes slow torch about 4x on this machine's 2 cores, so a timing taken beside the
quality study measures the study as much as the code. A benchmark wraps its measurements in
:func:`timing`; the study (``benchmarks/quality/run.py``) checks :func:`timing_in_progress`
between polls and stops its runs (SIGSTOP) until the lock is free, then lets them go on
(SIGCONT). The lock file lives outside any checkout, so a study running from a pinned worktree
and a benchmark running from the main checkout meet at the same file.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

LOCK_ENV = "STEER_TIMING_LOCK"
HELD_ENV = "STEER_TIMING_LOCK_HELD"  # set while held: a benchmark's own children measure freely
# How long a benchmark waits after taking the lock before it measures: the study polls the
# lock every 2 s and needs a moment to stop its runs.
SETTLE_SECONDS = 5.0


def lock_path() -> Path:
    default = Path.home() / ".cache" / "steering-service" / "timing.lock"
    return Path(os.environ.get(LOCK_ENV, default))


@contextmanager
def timing(settle_seconds: float = SETTLE_SECONDS) -> Iterator[None]:
    """Hold the timing lock (waiting for another benchmark's turn), then measure. A process
    started by a holder (a benchmark's measuring child) holds it already."""
    if os.environ.get(HELD_ENV):
        yield
        return
    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.environ[HELD_ENV] = "1"
        time.sleep(settle_seconds)
        yield
    finally:
        os.environ.pop(HELD_ENV, None)
        os.close(fd)  # releases the lock


def timing_in_progress() -> bool:
    """Whether a benchmark holds the timing lock now; never inside the holder's own process
    tree (a study that a benchmark or a test run under the lock started is part of what it
    measures: it would wait for itself)."""
    if os.environ.get(HELD_ENV):
        return False
    path = lock_path()
    try:
        fd = os.open(path, os.O_RDWR)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    else:
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)
