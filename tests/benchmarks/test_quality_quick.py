"""The quality study's --quick mode end to end, as a subprocess, on the tiny test model."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_quick_mode_trains_scores_reports_and_resumes(tmp_path: Path) -> None:
    command = [
        sys.executable,
        "benchmarks/quality/run.py",
        "--quick",
        "--model",
        "tiny-llama",
        "--methods",
        "base,post_block,reft,joint",
        "--work",
        str(tmp_path),
    ]
    first = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "study complete" in first.stdout

    out = tmp_path / "quick"
    runs = sorted(p.name for p in (out / "runs" / "quick-tiny-llama").glob("*.json"))
    assert runs == [
        "base-s0.json",
        "joint-lr0.0005-s0.json",
        "post_block-lr0.002-s0.json",
        "reft-lr0.002-s0.json",
    ]
    run = json.loads((out / "runs" / "quick-tiny-llama" / "post_block-lr0.002-s0.json").read_text())
    assert run["steps"] == 6 and run["trainable_parameters"] > 0
    assert len(run["test_correct"]) == 64 and len(run["validation_correct"]) == 32
    assert run["generation_check"]["items"] == 16

    report = json.loads((out / "results-quick-tiny-llama.json").read_text())
    assert [m["method"] for m in report["methods"]] == ["base", "post_block", "reft", "joint"]
    assert report["targets"][0].startswith("not judged")
    assert {(c["a"], c["b"]) for c in report["comparisons"]} >= {("post_block", "reft")}
    assert (out / "results-quick-tiny-llama.png").read_bytes()[:4] == b"\x89PNG"
    assert "| post-block nonlinear r=8 |" in (out / "results-quick-tiny-llama.md").read_text()
    summary = (out / "summary.md").read_text()
    assert "| method | quick-tiny-llama |" in summary
    assert "| post_block - reft |" in summary  # with its interval

    # Nothing is run twice: a second start finds the plan done.
    again = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and "study complete" in again.stdout
    assert "(sweep)" not in again.stdout
    # Nothing lands in the repository.
    assert not (ROOT / "benchmarks" / "quality" / "runs" / "quick-tiny-llama").exists()
