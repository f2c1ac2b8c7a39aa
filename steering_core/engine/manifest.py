"""The reproducibility manifest saved in every trained artifact."""

from __future__ import annotations

import hashlib
import platform
import resource
from pathlib import Path
from typing import Any

import torch

from steering_core.artifact.fingerprint import model_content_hash
from steering_core.artifact.store import library_versions
from steering_core.data.formats import dataset_sha256
from steering_core.engine.runtime import dist_env, hardware_summary
from steering_core.methods.base import AttachedMethod
from steering_core.spec.training_spec import ResolvedHyperparameters, TrainingSpec


def tokenizer_hash(tokenizer: Any) -> str:
    """sha256 of the tokenizer's full serialisation (vocab, merges, normaliser, specials)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    extra = (
        f"|{tokenizer.eos_token}|{tokenizer.pad_token}|{getattr(tokenizer, 'chat_template', '')}"
    )
    return hashlib.sha256((text + extra).encode()).hexdigest()


def build_manifest(
    spec: TrainingSpec,
    hyperparameters: ResolvedHyperparameters,
    attached: AttachedMethod,
    tokenizer: Any,
    device: torch.device,
    deepspeed_config: dict[str, Any] | None,
    state: dict[str, Any],
    train_seconds: float,
    backend: str = "torch",
) -> dict[str, Any]:
    env = dist_env()
    base_hash = attached.base_info.content_hash if attached.base_info else None
    return {
        "seed": spec.seed,
        "base_model": {
            "id": spec.model,
            "content_hash": base_hash or model_content_hash(attached.base_model),
        },
        "tokenizer_sha256": tokenizer_hash(tokenizer),
        "datasets": {
            name: {"path": Path(path).name, "sha256": dataset_sha256(path)}
            for name, path in (("train", spec.train_file), ("validation", spec.validation_file))
            if path is not None
        },
        "spec": spec.model_dump(mode="json"),
        "resolved_hyperparameters": hyperparameters.model_dump(mode="json"),
        "library_versions": {**library_versions(), **_optional_versions()},
        "deepspeed_config": deepspeed_config,
        "compute": {
            "world_size": env.world_size,
            "backend": backend,
            "zero_stage": state.get("zero_stage"),
        },
        "hardware": {
            **hardware_summary(device),
            "world_size": env.world_size,
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "result": {
            "steps": state["step"],
            "trained_tokens": state["trained_tokens"],
            "final_loss": state["losses"][-1] if state["losses"] else None,
            "validation": state["validation"],
            # the step whose adapter was saved, when it is the best validation's and not the last
            "best_validation_step": state.get("best_step"),
            "train_seconds": round(train_seconds, 3),
            **peak_memory(device),
        },
    }


def peak_memory(device: Any) -> dict[str, float | None]:
    """This process's peak memory so far, MiB: resident host memory (the most the operating
    system saw, model loading included) and, on a GPU, the most torch allocated there."""
    host = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    on_gpu = getattr(device, "type", None) == "cuda"
    return {
        "peak_host_memory_mib": round(host, 1),
        "peak_device_memory_mib": (
            round(torch.cuda.max_memory_allocated(device) / 2**20, 1) if on_gpu else None
        ),
    }


def _optional_versions() -> dict[str, str]:
    import importlib.metadata

    out = {}
    for package in ("deepspeed", "numpy"):
        try:
            out[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            out[package] = "not installed"
    return out
