#!/usr/bin/env bash
# Runs on the GPU machine (the `device` tool), from the repository root, with .whl carried:
#   run(command="bash benchmarks/gpu/on_device.sh", carry=[".whl"], timeout_s=600)
# Installs the carried wheels beside the image's torch, records the machine, runs the
# benchmark (its sections' budgets add up to 510 s, see README.md), and leaves gpu.json, the
# log and nvidia-smi's report under $OUT (the tool brings them back). Copy $OUT's gpu.json to
# benchmarks/gpu/results.json and commit it.
set -uo pipefail
export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site .whl/*.whl || exit 3
export PYTHONPATH=/tmp/site:$PWD
nvidia-smi > "$OUT/nvidia-smi.txt" 2>&1
python3 -c "import torch, transformers, deepspeed, peft, steering_core; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'transformers', transformers.__version__, 'deepspeed', deepspeed.__version__)" 2>&1 | tee "$OUT/versions.txt"
python3 -c "import fastapi, uvicorn, sqlalchemy, alembic, celery, multipart, api.app, worker.celery_app; print('service: fastapi', fastapi.__version__, 'sqlalchemy', sqlalchemy.__version__, 'celery', celery.__version__)" 2>&1 | tee -a "$OUT/versions.txt"
timeout 540 python3 benchmarks/gpu/run.py --out "$OUT/gpu.json" 2>&1 | tee "$OUT/run.log"
echo "exit ${PIPESTATUS[0]}"
