# syntax=docker/dockerfile:1
# The HTTP API (`steer api`); the same image runs the one-shot `steer migrate`.
#
# Build from the repository root:  docker build -f docker/api.Dockerfile -t steering-service-api .
#
# No torch and no transformers: the API checks jobs against model sizes with the torch-free
# steering_core.model.catalogue (tests/test_deployment_files.py checks that `import api.app` works
# without torch, and that this image then installs none).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

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
    pip install -e ".[api,wandb,mlflow]"

# Non-root; uid 10001 and /data as in worker.Dockerfile, so both write the shared volume.
RUN useradd --create-home --uid 10001 --user-group steer \
    && mkdir -p /data \
    && chown steer:steer /data
USER steer
ENV STEER_DATA_DIR=/data

EXPOSE 8000
# No curl in slim: python's urllib. A 503 (database or broker down) raises, so the check fails.
HEALTHCHECK --interval=15s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8000/health', timeout=4)"]

CMD ["steer", "api", "--host", "0.0.0.0", "--port", "8000"]
