"""A pinned copy of the code: a git worktree at one commit, with its own package metadata.

A study that runs for days runs from such a copy (``benchmarks/quality/run.py --pin REV``), so
the code that keeps changing in the main checkout never changes its runs halfway. The copy is a
detached worktree of the same repository (``git worktree add``), and it gets its own
``steering_service.egg-info`` (built from its own ``pyproject.toml``): with the copy first on
``PYTHONPATH``, the method registry's entry points are the pinned commit's, not those of the
project installed in the virtual environment (which follow the main checkout).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

METADATA = "steering_service.egg-info"


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise SystemExit(f"git {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout.strip()


def pinned_checkout(root: Path, rev: str, code_dir: Path) -> Path:
    """The worktree of commit ``rev`` of the repository at ``root`` (created on first use, under
    ``code_dir``), with its package metadata; returns its path."""
    commit = _git(root, "rev-parse", "--verify", f"{rev}^{{commit}}")
    path = code_dir / commit
    if not (path / ".git").exists():
        code_dir.mkdir(parents=True, exist_ok=True)
        _git(root, "worktree", "add", "--detach", str(path), commit)
    found = _git(path, "rev-parse", "HEAD")
    if found != commit:
        raise SystemExit(f"{path} is at {found}, not the pinned {commit}: remove it and retry")
    if not (path / METADATA / "entry_points.txt").is_file():
        subprocess.run(
            [sys.executable, "-c", "from setuptools import setup; setup()", "egg_info"],
            cwd=path,
            check=True,
            capture_output=True,
        )
    return path


def remove_checkout(root: Path, path: Path) -> None:
    """Remove a pinned worktree (and git's record of it)."""
    _git(root, "worktree", "remove", "--force", str(path))
