"""The engine's spec for a job: its row, its files on disk, the service's settings and quotas."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy.orm import Session

from registry import files as files_repo
from registry import quotas
from registry.models import Adapter, Job
from registry.settings import Settings
from steering_core.spec.training_spec import TrainingSpec

SPEC_FILE = "spec.json"


def training_spec_for(session: Session, settings: Settings, job: Job) -> TrainingSpec:
    """The spec the training subprocess runs for ``job``. Checkpoints every
    ``checkpoint_every_n_steps`` (a resumed attempt starts from the last); with a validation
    file, a validation at the end of every epoch and as often as the checkpoints, unless the
    job's ``eval_every_n_steps`` hyperparameter says otherwise (the engine's
    ``TrainingSpec.validation_plan``); the tenant's ``max_training_tokens`` quota is enforced
    by the engine once it has tokenized the data. The job's DeepSpeed settings
    (``compute.deepspeed``, already normalised: present whenever it runs on several ranks) are
    the spec's ``deepspeed``."""
    train = files_repo.get_file(session, job.training_file)
    validation = files_repo.get_file(session, job.validation_file) if job.validation_file else None
    every = settings.checkpoint_every_n_steps
    return TrainingSpec.model_validate(
        {
            "model": job.model,
            "method": job.method,
            "hyperparameters": job.hyperparameters,
            "seed": job.seed,
            "train_file": str(settings.files_dir / train.storage_path),
            "validation_file": (
                str(settings.files_dir / validation.storage_path) if validation else None
            ),
            "checkpoint_every_n_steps": every,
            "max_training_tokens": quotas.quotas_for(
                session, settings, job.tenant_id
            ).max_training_tokens,
            "eval_every_n_steps": every if validation else None,
            "eval_each_epoch": validation is not None,
            "deepspeed": (job.compute or {}).get("deepspeed"),
            "source_artifact": _source_artifact(session, settings, job),
        }
    )


def _source_artifact(session: Session, settings: Settings, job: Job) -> str | None:
    """Where the stored adapter a job's method names as its ``source`` lies (distill; the API
    stored its id). An adapter deleted since gives a path that does not exist: the engine says
    so, and the job fails with that message."""
    source = (job.method or {}).get("source")
    if not isinstance(source, str):
        return None
    adapter = session.get(Adapter, source)
    return str(settings.adapters_dir / (adapter.storage_path if adapter else source))


def write_spec_file(spec: TrainingSpec, job_dir: Path) -> Path:
    job_dir.mkdir(parents=True, exist_ok=True)
    path = job_dir / SPEC_FILE
    path.write_text(spec.model_dump_json(indent=1))
    return path
