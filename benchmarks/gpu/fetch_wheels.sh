#!/usr/bin/env bash
# Wheels for the GPU machine (the `device` tool's nvidia-h200 image, Python 3.12): the packages
# steering_core needs that the image lacks or has at another version, pinned to the versions in
# this checkout's .venv (the ones the test suite ran with). The image already has torch,
# accelerate, safetensors, tokenizers, huggingface-hub, numpy, ninja, psutil, py-cpuinfo,
# msgpack, einops, tqdm (device/KINDS.md). DeepSpeed ships no wheel on PyPI: it is built here
# from its sdist (pure Python; its ops compile at first use, there).
#
#   make setup && bash benchmarks/gpu/fetch_wheels.sh      # writes .whl/ (ignored, ~27 MB)
#
# Then one device call runs the benchmark: see benchmarks/gpu/README.md.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=.venv/bin/python
OUT=.whl
version() { "$PY" -c "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))" "$1"; }

rm -rf "$OUT" && mkdir -p "$OUT"
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
PLATFORMS=()
for p in manylinux_2_28_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 any; do
  PLATFORMS+=(--platform "$p")
done
# The engine's needs, then the service's (the worker_job section runs steer migrate/api/worker:
# FastAPI, SQLAlchemy + Alembic, Celery and what they need beyond the image).
for name in pydantic pydantic_core pydantic-settings python-dotenv annotated-types \
            typing-inspection hjson peft transformers gguf \
            fastapi starlette opentelemetry-api uvicorn python-multipart sqlalchemy alembic mako \
            celery kombu billiard vine amqp click-didyoumean click-plugins click-repl \
            prompt-toolkit wcwidth tzlocal; do
  "$PY" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
    --implementation cp "${PLATFORMS[@]}" -d "$OUT" "$name==$(version "$name")"
done
"$PY" -m pip wheel --quiet --no-deps --no-build-isolation -w "$OUT" \
  "deepspeed==$(version deepspeed)"
ls -1 "$OUT"
du -sh "$OUT"
