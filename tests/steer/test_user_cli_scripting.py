"""The user CLI as scripts and people meet it: the real ``steer`` as a subprocess against a real
API (jobs and adapters seeded through the registry, no training). Usage mistakes exit 2 with
click's short message, refusals are one line, ``--json`` is the API's objects, tables never cut
an id (in a pipe, or on a terminal 80 or 100 columns wide), ``jobs watch`` shows a step without
a known total and names the adapter, and ``adapters export`` writes the file the API sends."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import struct
import subprocess
import sys
import tarfile
import termios
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from rich.cells import cell_len

from registry import jobs as job_repo
from registry.db import session_scope
from registry.states import JobStatus
from tests.api.conftest import running_api
from tests.api.helpers import Api, register_adapter
from tests.service.harness import ROOT

TIMEOUT = 60.0
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")
TERMINAL_ENV = ("COLUMNS", "LINES", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE")
VECTOR = {"type": "post_block", "site": {"layers": [1, 2]}, "adapter": {"kind": "vector"}}


@dataclass
class Seeded:
    """A running API and what the registry holds: a file, a queued job, a running job at step 50
    of an unknown total, a succeeded job whose adapter is ``scripted@1``."""

    api: Api
    tmp: Path
    file_id: str
    queued_id: str
    running_id: str
    succeeded_id: str
    adapter_id: str

    @property
    def ids(self) -> list[str]:
        return [self.file_id, self.queued_id, self.running_id, self.succeeded_id, self.adapter_id]


def _env(tmp: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in TERMINAL_ENV and k != "STEER_URL"}
    return {**env, "XDG_CONFIG_HOME": str(tmp / "config"), "OMP_NUM_THREADS": "1", **extra}


def steer(tmp: Path, *args: str, url: str | None = None) -> subprocess.CompletedProcess[str]:
    """``steer ARGS`` with stdout and stderr piped (not a terminal)."""
    env = _env(tmp, **({"STEER_URL": url} if url else {}))
    return subprocess.run(
        [sys.executable, "-m", "steer.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


def steer_in_terminal(tmp: Path, url: str, columns: int, *args: str) -> tuple[int, str]:
    """``steer ARGS`` on a pseudo-terminal ``columns`` wide (COLUMNS and the window size both
    say so); its exit code and what it showed, escape sequences taken out."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    env = _env(tmp, STEER_URL=url, COLUMNS=str(columns), TERM="xterm-256color")
    proc = subprocess.Popen(
        [sys.executable, "-m", "steer.cli", *args],
        cwd=ROOT,
        env=env,
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    chunks: list[bytes] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 0.2)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(controller, 65536)
            except OSError:  # EIO: the command has ended and closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        code = proc.wait(timeout=5)
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(controller)
    shown = ANSI.sub("", b"".join(chunks).decode(errors="replace"))
    return code, shown.replace("\r", "")


def _artifact(root: Path) -> dict[str, bytes]:
    """A real post_block vector adapter of tiny-llama, saved as training saves one."""
    from steering_core.artifact.store import save_artifact
    from steering_core.model.loading import load_model
    from steering_core.steering.attach import attach_method

    out = root / "artifact"
    save_artifact(attach_method(load_model("tiny-llama"), VECTOR), out, base_model_id="tiny-llama")
    return {p.relative_to(out).as_posix(): p.read_bytes() for p in out.rglob("*") if p.is_file()}


def _seed_jobs(api: Api, file_id: str, adapter_id: str) -> tuple[str, str, str]:
    queued = api.job_ok(file_id)["id"]
    running, succeeded = api.job_ok(file_id)["id"], api.job_ok(file_id)["id"]
    with session_scope(api.settings.resolved_database_url) as session:
        for job_id in (running, succeeded):
            job = job_repo.get_job(session, job_id)
            job_repo.set_status(session, job, JobStatus.RUNNING)
            job_repo.add_event(
                session,
                job_id,
                "Training 3 examples (1,234 trainable parameters, 0.010%) on 1 rank (cpu)",
            )
            job.current_step = 50
            job_repo.add_event(
                session,
                job_id,
                "Step 50: training loss=0.5000",
                type="metrics",
                data={"step": 50, "train_loss": 0.5},  # no total_steps: not known yet
            )
            job_repo.add_event(session, job_id, "Checkpoint saved at step 50")
        job = job_repo.get_job(session, succeeded)
        job.fine_tuned_model = adapter_id
        job_repo.set_status(session, job, JobStatus.SUCCEEDED)
    return queued, running, succeeded


@pytest.fixture(scope="module")
def seeded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    tmp = tmp_path_factory.mktemp("cli")
    (tmp / "api").mkdir()
    with running_api(tmp / "api") as api:
        file_id = str(api.upload_ok()["id"])
        adapter = register_adapter(api, "scripted", files=_artifact(tmp), method=VECTOR)
        queued, running, succeeded = _seed_jobs(api, file_id, adapter["id"])
        yield Seeded(api, tmp, file_id, queued, running, succeeded, adapter["id"])


def _no_traceback(result: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in result.stdout + result.stderr, result.stdout + result.stderr


# -- usage mistakes ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("jobs", "list", "--jsn"), "No such option: --jsn"),
        (("jobs", "creat"), "No such command 'creat'"),
        (("jobs", "create", "--rank", "abc"), "'--rank'"),
        (("jobs", "create", "--method", "nope"), "'--method'"),
        (("jobs", "create", "--layers", "1-x"), "'1-x' is not a layer"),
        (("jobs", "create", "--watch", "--json"), "leave out --watch"),
        (("adapters", "export", "scripted@1"), "Missing option '--format'"),
        (("files", "upload", "no-such.jsonl"), "no such file: no-such.jsonl"),
    ],
)
def test_a_usage_mistake_exits_2_with_a_short_message(
    tmp_path: Path, args: tuple[str, ...], message: str
) -> None:
    result = steer(tmp_path, *args, url="http://127.0.0.1:9")  # never reached
    assert result.returncode == 2, result.stdout + result.stderr
    _no_traceback(result)
    assert message in result.stderr
    assert "Usage: steer" in result.stderr
    assert len(result.stderr.splitlines()) <= 6, result.stderr
    assert result.stdout == ""


def test_server_errors_are_one_line(seeded: Seeded) -> None:
    for args in (
        ("jobs", "list", "--json"),
        ("files", "list"),
        ("adapters", "get", "scripted@1"),
    ):
        gone = steer(seeded.tmp, *args, url="http://127.0.0.1:9")
        assert gone.returncode == 2, gone.stderr
        _no_traceback(gone)
        assert gone.stderr.startswith("error: cannot reach http://127.0.0.1:9/")
        assert len(gone.stderr.splitlines()) == 1, gone.stderr
    url = seeded.api.base_url
    missing = steer(seeded.tmp, "jobs", "get", "ftjob-nope", "--json", url=url)
    assert missing.returncode == 2 and missing.stdout == ""
    assert "404 not_found" in missing.stderr and "ftjob-nope" in missing.stderr
    assert len(missing.stderr.splitlines()) == 1, missing.stderr
    # a reference that reads as rich markup is shown as it is
    bracketed = steer(seeded.tmp, "adapters", "get", "[bold]odd", url=url)
    assert bracketed.returncode == 2 and "[bold]odd" in bracketed.stderr, bracketed.stderr


# -- --json -----------------------------------------------------------------------------------
def test_json_is_the_apis_objects_with_whole_ids(seeded: Seeded) -> None:
    url = seeded.api.base_url

    def as_json(*args: str) -> Any:
        result = steer(seeded.tmp, *args, "--json", url=url)
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    assert [f["id"] for f in as_json("files", "list")] == [seeded.file_id]
    assert as_json("files", "get", seeded.file_id)["filename"] == "train.jsonl"
    jobs = {j["id"]: j for j in as_json("jobs", "list")}
    assert set(jobs) == {seeded.queued_id, seeded.running_id, seeded.succeeded_id}
    assert jobs[seeded.succeeded_id]["fine_tuned_model"] == seeded.adapter_id
    job = as_json("jobs", "get", seeded.running_id)
    assert job["progress"]["step"] == 50 and job["progress"]["total_steps"] is None
    assert job == seeded.api.get_json(f"/v1/fine_tuning/jobs/{seeded.running_id}")
    [adapter] = as_json("adapters", "list")
    assert adapter["id"] == seeded.adapter_id and adapter["reference"] == "scripted@1"
    assert as_json("adapters", "get", "scripted@1") == adapter


# -- ids in tables ----------------------------------------------------------------------------
def test_tables_keep_whole_ids_in_a_pipe(seeded: Seeded) -> None:
    url = seeded.api.base_url
    shown = "".join(
        steer(seeded.tmp, *args, url=url).stdout
        for args in (("files", "list"), ("jobs", "list"), ("adapters", "list"))
    )
    for an_id in seeded.ids:
        assert an_id in shown, (an_id, shown)
    assert "…" not in shown
    jobs = steer(seeded.tmp, "jobs", "list", url=url).stdout.splitlines()
    assert jobs[0].split() == ["id", "model", "method", "status", "progress", "adapter"]
    rows = {line.split()[0]: line.split() for line in jobs[1:]}
    assert rows[seeded.succeeded_id][3:] == ["succeeded", "100%", "scripted@1"]
    assert rows[seeded.running_id][3:] == ["running", "step", "50"]
    record = steer(seeded.tmp, "jobs", "get", seeded.succeeded_id, url=url).stdout
    assert re.search(rf"^adapter +{seeded.adapter_id}$", record, re.MULTILINE), record


@pytest.mark.parametrize("columns", [80, 100])
def test_tables_keep_whole_ids_on_a_terminal(seeded: Seeded, columns: int) -> None:
    url = seeded.api.base_url
    for args in (("files", "list"), ("jobs", "list"), ("adapters", "list")):
        code, shown = steer_in_terminal(seeded.tmp, url, columns, *args)
        assert code == 0, shown
        assert "┃ id" in shown or "┃ reference" in shown, shown  # a table, not plain text
        assert "…" not in shown, shown
        expected = {
            "files": [seeded.file_id],
            "jobs": [seeded.queued_id, seeded.running_id, seeded.succeeded_id, "scripted@1"],
            "adapters": [seeded.adapter_id, "scripted@1"],
        }[args[0]]
        for an_id in expected:
            assert an_id in shown, (an_id, shown)
        # the other columns fold to fit: no line wider than the terminal
        assert max(cell_len(line) for line in shown.splitlines()) <= columns, shown


# -- watch ------------------------------------------------------------------------------------
def test_watch_shows_a_step_without_its_total_and_names_the_adapter(seeded: Seeded) -> None:
    url = seeded.api.base_url
    piped = steer(seeded.tmp, "jobs", "watch", seeded.succeeded_id, url=url)
    assert piped.returncode == 0, piped.stderr
    lines = piped.stdout.splitlines()
    assert "step 50  train loss 0.5000" in lines
    assert "None" not in piped.stdout
    assert any("1,234 trainable parameters" in line for line in lines)
    assert "Checkpoint saved at step 50" in lines
    assert lines[-1] == f"succeeded: adapter scripted@1 ({seeded.adapter_id})"

    code, shown = steer_in_terminal(seeded.tmp, url, 80, "jobs", "watch", seeded.succeeded_id)
    assert code == 0, shown
    assert "1,234 trainable parameters" in shown and "Checkpoint saved at step 50" in shown
    assert "step 50" in shown and "step 50/" not in shown and "None" not in shown
    assert f"succeeded: adapter scripted@1 ({seeded.adapter_id})" in shown


# -- export -----------------------------------------------------------------------------------
def test_export_writes_the_file_the_api_sends(seeded: Seeded, tmp_path: Path) -> None:
    url = seeded.api.base_url
    target = tmp_path / "vector.gguf"
    exported = steer(
        seeded.tmp,
        *("adapters", "export", "scripted@1", "--format", "control_vector_gguf"),
        *("--out", str(target)),
        url=url,
    )
    assert exported.returncode == 0, exported.stderr
    sent = seeded.api.client.get(
        "/v1/adapters/scripted@1/export", params={"format": "control_vector_gguf"}
    )
    assert target.read_bytes() == sent.content and sent.content[:4] == b"GGUF"
    assert str(target) in exported.stdout

    into = tmp_path / "exports"
    into.mkdir()
    tensors = steer(
        seeded.tmp,
        *("adapters", "export", seeded.adapter_id, "--format", "layer_tensors"),
        *("--out", str(into)),
        url=url,
    )
    assert tensors.returncode == 0, tensors.stderr
    [written] = into.iterdir()
    assert written.name == "scripted-v1-layer_tensors.tar.gz"
    with tarfile.open(written) as tar:
        assert any(name.endswith(".safetensors") for name in tar.getnames())

    refused = steer(
        seeded.tmp,
        *("adapters", "export", "scripted@1", "--format", "onnx", "--out", str(into)),
        url=url,
    )
    assert refused.returncode == 2
    _no_traceback(refused)
    assert "unknown export format 'onnx'" in refused.stderr and "(format)" in refused.stderr
    assert len(refused.stderr.splitlines()) == 1, refused.stderr
    assert [p.name for p in into.iterdir()] == [written.name]


def test_jobs_pause_and_resume(seeded: Seeded) -> None:
    created = seeded.api.client.post(
        "/v1/fine_tuning/jobs", json={"model": "tiny-llama", "training_file": seeded.file_id}
    )
    assert created.status_code == 200, created.text
    job_id = created.json()["id"]
    url = seeded.api.base_url
    paused = steer(seeded.tmp, "jobs", "pause", job_id, url=url)
    assert (paused.returncode, paused.stdout.strip()) == (0, f"{job_id}: paused"), paused.stderr
    again = steer(seeded.tmp, "jobs", "pause", job_id, url=url)
    assert again.returncode == 2 and "Traceback" not in again.stderr
    assert len(again.stderr.strip().splitlines()) == 1 and "paused" in again.stderr
    resumed = steer(seeded.tmp, "jobs", "resume", job_id, url=url)
    assert (resumed.returncode, resumed.stdout.strip()) == (0, f"{job_id}: queued")
    assert seeded.api.get_json(f"/v1/fine_tuning/jobs/{job_id}")["status"] == "queued"


def test_jobs_create_with_auto_layers(seeded: Seeded) -> None:
    url = seeded.api.base_url
    common = ["jobs", "create", "--model", "tiny-llama", "--file", seeded.file_id]
    made = steer(seeded.tmp, *common, "--layers", "auto", "--max-layers", "2", "--json", url=url)
    assert made.returncode == 0, made.stderr
    job = seeded.api.get_json(f"/v1/fine_tuning/jobs/{json.loads(made.stdout)['id']}")
    site = job["method"]["post_block"]["site"]
    assert (site["layers"], site["max_layers"]) == ("auto", 2)
    refused = steer(seeded.tmp, *common, "--layers", "auto", url=url)  # no budget
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "max_layers" in refused.stderr or "budget" in refused.stderr


def test_jobs_create_a_dpo_job_from_flags(seeded: Seeded) -> None:
    from tests.steering_core.train_helpers import write_preferences

    pairs = write_preferences(seeded.tmp / "pairs.jsonl", n=8)
    url = seeded.api.base_url
    made = steer(
        seeded.tmp,
        *("jobs", "create", "--model", "tiny-llama", "--file", str(pairs), "--method", "dpo"),
        *("--beta", "0.3", "--layers", "1-2", "--rank", "4", "--json"),
        url=url,
    )
    assert made.returncode == 0, made.stderr
    job = seeded.api.get_json(f"/v1/fine_tuning/jobs/{json.loads(made.stdout)['id']}")
    block = job["method"]["dpo"]
    assert block["hyperparameters"]["beta"] == 0.3
    assert block["trains"]["type"] == "post_block"
    assert block["trains"]["site"]["layers"] == [1, 2]
    assert block["trains"]["adapter"]["rank"] == 4
    refused = steer(
        seeded.tmp,
        *("jobs", "create", "--model", "tiny-llama", "--file", seeded.file_id, "--beta", "0.3"),
        url=url,
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "beta applies to the dpo method only" in refused.stderr


def test_jobs_create_a_distill_job_from_flags(seeded: Seeded) -> None:
    url = seeded.api.base_url
    made = steer(
        seeded.tmp,
        *("jobs", "create", "--model", "tiny-llama", "--file", seeded.file_id),
        *("--method", "distill", "--source", "scripted@1", "--layers", "0-1", "--json"),
        url=url,
    )
    assert made.returncode == 0, made.stderr
    job = seeded.api.get_json(f"/v1/fine_tuning/jobs/{json.loads(made.stdout)['id']}")
    block = job["method"]["distill"]
    assert block["source"] == seeded.adapter_id
    assert block["trains"]["site"]["layers"] == [0, 1]
    refused = steer(
        seeded.tmp,
        *("jobs", "create", "--model", "tiny-llama", "--file", seeded.file_id),
        *("--method", "distill", "--source", "nothing@1"),
        url=url,
    )
    assert refused.returncode == 2 and "Traceback" not in refused.stderr
    assert "method.distill.source" in refused.stderr and "nothing@1" in refused.stderr
