"""Steered generation through the real API: first request (loads the model and the adapter)
against the next ones (served from the model cache), on SmolLM2-135M-Instruct.

    python benchmarks/generation_cache/run.py [--requests 4] [--max-tokens 16]

Starts ``steer api`` (embedded SQLite) on a free port in a temporary data directory, registers a
post-block adapter (library-made, randomly initialised at a visible scale: the timing does not
depend on training) the way a worker would, and times ``POST /v1/chat/completions`` requests,
reading the ``X-Steer-Model-Cache`` header of each. Writes ``results.md`` and ``results.json``
beside this script.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE.parent))
from local_api import free_port, wait_until_healthy  # noqa: E402

MODEL = "smollm2-135m-instruct"


def make_adapter(data_dir: Path) -> str:
    """A post-block adapter on SmolLM2, stored and registered as a worker stores one."""
    import torch

    from registry.adapters import create_adapter
    from registry.db import session_scope
    from registry.migrate import upgrade
    from registry.settings import Settings
    from registry.storage import store_artifact
    from steering_core.artifact.store import save_artifact
    from steering_core.model.loading import load_model
    from steering_core.steering.attach import attach_method

    settings = Settings(data_dir=data_dir)
    settings.ensure_dirs()
    upgrade(settings.resolved_database_url)
    attached = attach_method(load_model(MODEL), {"type": "post_block"})
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in attached.steering.parameters():
            param.copy_(torch.randn(param.shape, generator=generator) * 0.05)
    source = data_dir / "made"
    save_artifact(attached, source, base_model_id=MODEL)
    with session_scope(settings.resolved_database_url) as session:
        row = create_adapter(
            session,
            tenant_id="default",
            name="bench",
            base_model=MODEL,
            method={"type": "post_block"},
            storage_path="pending",
            sha256="",
            bytes=0,
            files={},
            trainable_parameters=None,
            metrics=None,
        )
        stored = store_artifact(source, settings.adapters_dir / row.id)
        row.storage_path, row.sha256 = row.id, stored.sha256
        row.bytes, row.files = stored.bytes, stored.files
        return row.id


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=4)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        data_dir = Path(folder)
        adapter = make_adapter(data_dir)
        port = free_port()
        env = {**os.environ, "STEER_DATA_DIR": str(data_dir), "STEER_TORCH_THREADS": "2"}
        log = (data_dir / "api.log").open("w")
        api = subprocess.Popen(
            [sys.executable, "-m", "steer.cli", "api", "--port", str(port)],
            cwd=ROOT,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            client = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=600)
            wait_until_healthy(f"http://127.0.0.1:{port}", timeout=120, process=api)
            body = {
                "messages": [{"role": "user", "content": "Name three primary colours."}],
                "max_tokens": args.max_tokens,
                "temperature": 0,
            }
            rows = []
            for model in (adapter, MODEL):
                for i in range(args.requests):
                    started = time.perf_counter()
                    response = client.post("/v1/chat/completions", json={"model": model, **body})
                    seconds = time.perf_counter() - started
                    response.raise_for_status()
                    answer = response.json()
                    rows.append(
                        {
                            "model": "adapter" if model == adapter else "base",
                            "request": i + 1,
                            "cache": response.headers["x-steer-model-cache"],
                            "seconds": round(seconds, 3),
                            "completion_tokens": answer["usage"]["completion_tokens"],
                            "text": answer["choices"][0]["message"]["content"],
                        }
                    )
                    print(rows[-1], flush=True)
        finally:
            api.terminate()
            api.wait(timeout=30)
    write(rows, args)
    return 0


def write(rows: list[dict], args: argparse.Namespace) -> None:
    (HERE / "results.json").write_text(json.dumps(rows, indent=1) + "\n")
    lines = [
        "# Steered generation: model cache",
        "",
        f"`python benchmarks/generation_cache/run.py --requests {args.requests} "
        f"--max-tokens {args.max_tokens}` on {time.strftime('%Y-%m-%d')} "
        f"({platform.machine()}, {os.cpu_count()} cores, CPU, torch threads 2). "
        f"{MODEL}, greedy chat completion of {args.max_tokens} tokens through the real API "
        "(`steer api`, embedded).",
        "",
        "| model | request | cache | seconds | completion tokens |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['model']} | {r['request']} | {r['cache']} | {r['seconds']:.2f} | "
        f"{r['completion_tokens']} |"
        for r in rows
    ]
    for kind in ("adapter", "base"):
        mine = [r for r in rows if r["model"] == kind]
        warm = [r["seconds"] for r in mine if r["cache"] == "hit"]
        cold = [r["seconds"] for r in mine if r["cache"] == "miss"]
        if warm and cold:
            lines.append("")
            lines.append(
                f"{kind}: first request {cold[0]:.2f} s (loads), cached requests median "
                f"{statistics.median(warm):.2f} s: {cold[0] / statistics.median(warm):.1f}x "
                "faster once cached."
            )
    steered = next(r["text"] for r in rows if r["model"] == "adapter")
    plain = next(r["text"] for r in rows if r["model"] == "base")
    lines += [
        "",
        f"Adapter output: {steered!r}",
        f"Base output: {plain!r}",
        "",
    ]
    (HERE / "results.md").write_text("\n".join(lines))


if __name__ == "__main__":
    from timing_lock import timing  # the quality study pauses while this measures

    with timing():
        sys.exit(main())
