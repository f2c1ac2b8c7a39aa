"""A study that runs for days: from a pinned copy of the code, paused while timings are taken."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

from pinning import pinned_checkout, remove_checkout  # noqa: E402
from timing_lock import HELD_ENV, LOCK_ENV, timing, timing_in_progress  # noqa: E402


def _git(*args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(ROOT), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _state(pid: int) -> str:
    """The process's state letter from /proc: R/S running or sleeping, T stopped."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.slow
def test_a_pinned_run_records_the_commit_it_ran(tmp_path: Path) -> None:
    """``run.py --pin HEAD`` runs from a worktree of HEAD (with the pinned commit's own method
    entry points) and the run's JSON names that commit, clean."""
    head = _git("rev-parse", "HEAD")
    command = [
        sys.executable,
        "benchmarks/quality/run.py",
        "--pin",
        "HEAD",
        "--quick",
        "--model",
        "tiny-llama",
        "--methods",
        "post_block",
        "--work",
        str(tmp_path),
    ]
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stdout + done.stderr
        code = tmp_path / "code" / head
        assert f"pinned: {code}" in done.stdout
        assert (code / "steering_service.egg-info" / "entry_points.txt").is_file()
        run = json.loads(
            (
                tmp_path / "quick" / "runs" / "quick-tiny-llama" / "post_block-lr0.002-s0.json"
            ).read_text()
        )
        assert run["code_commit"] == head and run["code_dirty"] is False
        assert pinned_checkout(ROOT, "HEAD", tmp_path / "code") == code  # reused as it is
    finally:
        if (tmp_path / "code" / head).exists():
            remove_checkout(ROOT, tmp_path / "code" / head)
    assert str(tmp_path / "code" / head) not in _git("worktree", "list")


def test_a_pinned_checkout_refuses_an_unknown_revision(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="no-such-revision"):
        pinned_checkout(ROOT, "no-such-revision", tmp_path)


def _benchmark_holding_the_lock(env: dict[str, str]) -> subprocess.Popen[str]:
    """Another process that holds the timing lock until its stdin closes."""
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys\nfrom timing_lock import timing\n"
            "with timing(settle_seconds=0):\n    print('held', flush=True)\n    sys.stdin.read()",
        ],
        cwd=ROOT / "benchmarks",
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    return holder


def test_runs_stop_while_a_timing_benchmark_measures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from run import Slot, pause_while_timing

    monkeypatch.setenv(LOCK_ENV, str(tmp_path / "timing.lock"))
    monkeypatch.delenv(HELD_ENV, raising=False)  # the suite may run under a benchmark's lock
    busy = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    slots = {0: Slot("p/k", busy, None, tmp_path, tmp_path, time.monotonic())}  # type: ignore[arg-type]
    holder = None
    try:
        assert not timing_in_progress()
        holder = _benchmark_holding_the_lock(dict(os.environ))
        assert timing_in_progress()
        pauser = threading.Thread(target=pause_while_timing, args=(slots,))
        pauser.start()
        deadline = time.monotonic() + 10
        while _state(busy.pid) != "T" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert _state(busy.pid) == "T", "the run is stopped while the benchmark measures"
        assert holder.stdin is not None
        holder.stdin.close()  # the benchmark is done
        holder.wait(10)
        pauser.join(10)
        assert not pauser.is_alive() and not timing_in_progress()
        assert _state(busy.pid) in "RS", "and goes on once it is done"
    finally:
        if holder is not None and holder.poll() is None:
            holder.kill()
        busy.kill()
        busy.wait()


def test_a_study_started_under_the_lock_does_not_wait_for_its_own_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The test suite run under the timing lock starts quick studies: they must not pause."""
    monkeypatch.setenv(LOCK_ENV, str(tmp_path / "timing.lock"))
    monkeypatch.delenv(HELD_ENV, raising=False)
    with timing(settle_seconds=0):
        assert os.environ[HELD_ENV] == "1"  # what the holder's children inherit
        done = subprocess.run(
            [sys.executable, "-c", "import timing_lock; print(timing_lock.timing_in_progress())"],
            cwd=ROOT / "benchmarks",
            capture_output=True,
            text=True,
            check=True,
        )
        assert done.stdout.strip() == "False"
    assert HELD_ENV not in os.environ and not timing_in_progress()
