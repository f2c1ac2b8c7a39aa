"""Shared fixtures: tiny models of every supported family, built from config."""

from __future__ import annotations

import os

import pytest

# Keep torch to a thread or two: the suite runs beside services on a 2-core machine.
os.environ.setdefault("OMP_NUM_THREADS", "2")


@pytest.fixture(autouse=True)
def _torch_threads():
    try:
        import torch
    except ImportError:  # torch-free tests
        yield
        return
    # The variable's count, not a fixed one: subprocesses a test starts (a fresh-process load,
    # the CLI) inherit the variable, and bitwise comparisons with them need the same count.
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    yield
