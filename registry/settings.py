"""Service settings: one ``get_settings()``, from ``STEER_*`` environment variables.

With nothing set, everything is embedded under one data directory: a SQLite registry, a
filesystem message broker (kombu's, so Celery runs unchanged) and the artifact store. Production
sets ``STEER_DATABASE_URL`` (PostgreSQL) and ``STEER_BROKER_URL`` (Redis).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

# steering_core.model.catalogue.SERVED_BY_DEFAULT, named again: the registry imports nothing of the
# core (tests/registry/test_settings_catalogue.py checks the two agree)
DEFAULT_MODELS = ["smollm2-135m-instruct", "gemma-3-270m", "tiny-llama", "tiny-gemma3_text"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STEER_", extra="ignore")

    data_dir: Path = Field(
        default=Path("data/service"), description="Everything embedded lives here"
    )
    database_url: str | None = Field(default=None, description="default: sqlite in data_dir")
    broker_url: str | None = Field(
        default=None, description="default: filesystem broker in data_dir"
    )
    models: list[str] = Field(default_factory=lambda: list(DEFAULT_MODELS))
    model_cache_dir: Path | None = None
    max_upload_bytes: int = 100 * 1024 * 1024
    lease_seconds: float = 30.0
    checkpoint_every_n_steps: int = 50
    reconcile_every_seconds: float = 10.0
    requeue_stale_after_seconds: float = 60.0
    max_attempts: int = 3
    broker_visibility_timeout: float = Field(
        default=3600.0,
        gt=0,
        description="Redis re-delivers an unacked message after this many seconds (harmless: "
        "the job lease decides who runs a job)",
    )
    db_retry_seconds: float = Field(
        default=300.0,
        ge=0,
        description="a worker retries registry writes this long while the database is "
        "unreachable, then stops the run (its lease expires and the job is requeued)",
    )
    auth: Literal["off", "on"] = Field(
        default="off",
        description="off: every request is tenant 'default' (steer api then binds to localhost "
        "only); on: every request needs an API key (Authorization: Bearer ...)",
    )
    admin_key: str | None = Field(default=None, description="bootstrap admin key (auth on)")
    max_json_body_bytes: int = Field(
        default=4 * 1024 * 1024,
        ge=1024,
        description="largest JSON request body; refused with 413 as it streams (uploads are "
        "bounded by max_upload_bytes instead)",
    )
    max_streams_per_tenant: int = Field(
        default=8,
        ge=1,
        description="event streams (GET .../events?stream=true) one tenant may hold open in "
        "one API process; the next is a 429",
    )
    stream_keepalive_seconds: float = Field(
        default=15.0, gt=0, description="an idle event stream sends a comment this often"
    )
    stream_auth_recheck_seconds: float = Field(
        default=5.0,
        gt=0,
        description="with auth on, an open event stream checks its API key this often and "
        "ends once the key is revoked",
    )
    quota_max_concurrent_jobs: int | None = Field(
        default=None, ge=1, description="default per-tenant limit of unfinished jobs"
    )
    quota_max_file_bytes: int | None = Field(
        default=None, ge=1, description="default per-tenant limit of one file's size"
    )
    quota_max_training_tokens: int | None = Field(
        default=None, ge=1, description="default per-tenant limit of tokens one job trains on"
    )
    generation_cache_size: int = Field(
        default=2,
        ge=1,
        le=64,
        description="full fine-tuned models kept loaded for generation (each is its own copy; "
        "every other adapter shares its base model's one copy)",
    )
    generation_adapter_pool_mb: float = Field(
        default=256.0,
        gt=0,
        le=1_000_000,
        description="memory for adapters resident for generation, least recently used out first",
    )
    generation_max_batch: int = Field(
        default=64, ge=1, le=4096, description="requests one base model decodes at once"
    )
    generation_device: str = Field(
        default="auto",
        pattern=r"^(auto|cpu|cuda(:[0-9]+)?)$",
        description="where generation runs: auto (the first GPU torch sees, else the CPU), "
        "cpu, cuda or cuda:N",
    )
    generation_dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        default="auto",
        description="precision of served models: auto is bfloat16 on a GPU, float32 on the CPU",
    )
    generation_max_tokens: int = Field(
        default=512, ge=1, le=32768, description="upper bound of max_tokens per request"
    )
    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per log line, with job_id fields"
    )
    worker_queues: list[str] = Field(default_factory=lambda: ["cpu"])
    worker_gpus: int = 0
    worker_cpu_slots: int = Field(
        default=2,
        ge=0,
        le=1024,
        description="CPU ranks a worker runs at once: a CPU job of P processes takes P slots",
    )
    worker_concurrency: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="jobs a worker runs at once (default: one per GPU, at least one)",
    )
    collective_timeout_seconds: float = Field(
        default=600.0,
        gt=0,
        description="how long the ranks of a job wait for each other in a collective before "
        "the job fails (a rank that died must not leave the others hanging)",
    )
    worker_seen_seconds: float = Field(
        default=300.0,
        gt=0,
        description="a worker heard from within this many seconds counts as present: a job "
        "that none of them can run is accepted with a warning",
    )
    torch_threads: int | None = None
    wandb_mode: Literal["auto", "online", "offline"] = Field(
        default="auto",
        description="W&B integrations: online logs to W&B's servers (the worker's WANDB_API_KEY), "
        "offline writes a run directory to sync later with `wandb sync`; auto is online when "
        "WANDB_API_KEY is set and W&B's server (WANDB_BASE_URL) can be reached, else offline",
    )
    wandb_dir: Path | None = Field(
        default=None,
        description="where W&B runs are written (<dir>/wandb/...; default: each job's directory)",
    )
    mlflow_file_root: Path | None = Field(
        default=None,
        description="the directory a job's file: MLflow tracking URI must be under (default: "
        "<data_dir>/mlflow); a job naming no tracking_uri logs there",
    )
    mlflow_allowed_hosts: list[str] | None = Field(
        default=None,
        description="MLflow servers (host or host:port) a job may log to; default: any "
        "http(s) host the workers reach",
    )
    tracker_close_seconds: float = Field(
        default=60.0,
        gt=0,
        description="how long a worker waits, after a job ends, for its trackers to finish "
        "logging before it takes the next job (they go on in the background)",
    )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{(self.data_dir / 'registry.db').resolve()}"

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_folder(self) -> Path:
        return (self.data_dir / "broker").resolve()

    @property
    def files_dir(self) -> Path:
        return (self.data_dir / "files").resolve()

    @property
    def jobs_dir(self) -> Path:
        return (self.data_dir / "jobs").resolve()

    @property
    def adapters_dir(self) -> Path:
        return (self.data_dir / "adapters").resolve()

    @property
    def resolved_mlflow_file_root(self) -> Path:
        return (self.mlflow_file_root or self.data_dir / "mlflow").resolve()

    def ensure_dirs(self) -> None:
        for path in (self.data_dir, self.files_dir, self.jobs_dir, self.adapters_dir):
            path.mkdir(parents=True, exist_ok=True)
        if self.broker_url is None:
            for sub in ("in", "processed", "control"):
                (self.broker_folder / sub).mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
