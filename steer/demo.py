"""``make demo``: the whole service on one machine, from upload to a better model.

1. starts ``steer up`` embedded (SQLite + filesystem broker under ``data/demo``; no servers);
2. measures SmolLM2-135M-Instruct on held-out generated ListOps;
3. uploads the bundled training file and POSTs a ``post_block`` job over HTTP;
4. follows the job's server-sent events live (step, loss, ETA);
5. downloads the trained adapter, loads it into a fresh model and measures again.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from typing import Any

import httpx

from steer.held_out import cli_evaluate, head_jsonl

ROOT = Path(__file__).resolve().parents[1]
TASKS = ROOT / "data" / "tasks"
MODEL = "smollm2-135m-instruct"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _follow(client: httpx.Client, job_id: str) -> None:
    """Print progress from the job's event stream until it ends."""
    with client.stream(
        "GET", f"/v1/fine_tuning/jobs/{job_id}/events", params={"stream": "true"}, timeout=None
    ) as response:
        kind = "message"
        for line in response.iter_lines():
            if line.startswith("event: "):
                kind = line[7:]
            if not line.startswith("data: "):
                continue
            if kind in ("done", "error"):
                break
            event = json.loads(line[6:])
            data = event.get("data") or {}
            if event["type"] == "metrics" and "train_loss" in data:
                job = client.get(f"/v1/fine_tuning/jobs/{job_id}").json()
                eta = job["estimated_finish"]
                left = f", ~{max(0, eta - int(time.time()))} s left" if eta else ""
                print(
                    f"\r  step {data['step']:>3}/{data['total_steps']}  loss "
                    f"{data['train_loss']:.4f}  {data['tokens_per_second']:.0f} tok/s{left}   ",
                    end="",
                    flush=True,
                )
            elif event["type"] == "message":
                print(f"\n  {event['message']}", flush=True)
    print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", type=int, default=400, help="training items (ListOps)")
    parser.add_argument("--test", type=int, default=100, help="held-out items")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data" / "demo")
    args = parser.parse_args(argv)
    shutil.rmtree(args.data_dir, ignore_errors=True)
    args.data_dir.mkdir(parents=True)
    train = head_jsonl(
        TASKS / "listops_train.jsonl", args.data_dir / "listops_train.jsonl", args.train
    )
    test = head_jsonl(TASKS / "listops_test.jsonl", args.data_dir / "listops_test.jsonl", args.test)

    port = _free_port()
    service = _start_service(args.data_dir, port)
    client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=60)
    try:
        print(
            f"1. service: `steer up` on http://127.0.0.1:{port} (embedded: SQLite + "
            f"filesystem broker in {args.data_dir / 'service'})"
        )
        _wait_healthy(client)
        print(f"2. base model {MODEL} on {args.test} held-out ListOps items ...", flush=True)
        before = cli_evaluate(MODEL, test, "listops")["accuracy"]
        print(f"   accuracy before: {before:.1%}")
        job = _train(client, train)
        adapter = _download(client, job, args.data_dir / "downloaded")
        after = cli_evaluate(MODEL, test, "listops", adapter=adapter)["accuracy"]
        print(f"   accuracy after:  {after:.1%}  (before: {before:.1%})")
    finally:
        client.close()
        service.send_signal(signal.SIGINT)
        try:
            service.wait(timeout=30)
        except subprocess.TimeoutExpired:
            service.kill()


def _start_service(data_dir: Path, port: int) -> subprocess.Popen[bytes]:
    """``steer up`` on ``port``, its data and log under ``data_dir``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STEER_")}
    env.update(
        {
            "STEER_DATA_DIR": str(data_dir / "service"),
            "STEER_CHECKPOINT_EVERY_N_STEPS": "25",
            "PYTHONUNBUFFERED": "1",
        }
    )
    log = (data_dir / "service.log").open("w")
    return subprocess.Popen(
        [sys.executable, "-m", "steer.cli", "up", "--port", str(port)],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )


def _wait_healthy(client: httpx.Client) -> None:
    """Poll ``/health`` until it answers 200 (300 tries; half a second apart while the
    service refuses connections)."""
    for _ in range(300):
        try:
            if client.get("/health").status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.5)


def _job_body(file_id: str) -> dict[str, Any]:
    """The demo's fine-tuning job: a rank-8 nonlinear ``post_block`` adapter, one epoch."""
    return {
        "model": MODEL,
        "training_file": file_id,
        "suffix": "listops-demo",
        "seed": 42,
        "method": {
            "type": "post_block",
            "post_block": {
                "site": {"name": "block_output"},
                "adapter": {"kind": "nonlinear", "rank": 8},
                "hyperparameters": {
                    "n_epochs": 1,
                    "batch_size": 8,
                    "gradient_accumulation_steps": 1,
                    "learning_rate": 2e-3,
                },
            },
        },
    }


def _train(client: httpx.Client, train: Path) -> dict[str, Any]:
    """Steps 3 and 4: upload the training file, create the job and follow it to success."""
    with train.open("rb") as handle:
        file = client.post(
            "/v1/files", data={"purpose": "fine-tune"}, files={"file": (train.name, handle)}
        ).json()
    print(
        f"3. uploaded {file['filename']}: {file['id']}, {file['n_examples']} examples, "
        f"status {file['status']}"
    )
    job = client.post("/v1/fine_tuning/jobs", json=_job_body(file["id"])).json()
    print(f"   POST /v1/fine_tuning/jobs -> {job['id']} ({job['status']})")
    print("4. following the job's event stream:")
    started = time.monotonic()
    _follow(client, job["id"])
    job = client.get(f"/v1/fine_tuning/jobs/{job['id']}").json()
    if job["status"] != "succeeded":
        raise SystemExit(f"job ended {job['status']}: {job['error']}")
    print(
        f"   {job['status']} in {time.monotonic() - started:.0f} s; adapter "
        f"{job['fine_tuned_model']}, {job['trained_tokens']} trained tokens"
    )
    return job


def _download(client: httpx.Client, job: dict[str, Any], target: Path) -> Path:
    """Step 5: download the job's adapter and unpack it under ``target``; its directory."""
    archive = client.get(f"/v1/adapters/{job['fine_tuned_model']}/content")
    with tarfile.open(fileobj=io.BytesIO(archive.content)) as tar:
        tar.extractall(target, filter="data")
    adapter = next(target.iterdir())
    files = ", ".join(sorted(p.name for p in adapter.iterdir()))
    print(f"5. downloaded {len(archive.content):,} bytes to {adapter}: {files}")
    return adapter


if __name__ == "__main__":
    main()
