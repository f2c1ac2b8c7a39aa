"""Adapter artifacts: ``steering_config.json`` + tensors in safetensors (no pickle anywhere).

Layout of an artifact directory:

- ``steering_config.json``: :class:`~steering_core.artifact.schema.ArtifactConfig`;
- ``adapter_model.safetensors``: steering tensors ``layers.{i}.{name}`` (post_block, joint, reft);
- ``lora/``: the LoRA half in peft's own format (lora, joint), loadable by ``PeftModel``;
- ``model.safetensors``: the whole model (full fine-tuning).

Loading needs only the artifact and the base model, and refuses a base model whose
architecture, hidden size or layer count differ from the one the artifact was trained on.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import Any

from torch import nn

from steering_core.artifact.accounting import count_parameters
from steering_core.artifact.check import read_config
from steering_core.artifact.fingerprint import base_model_info, model_content_hash
from steering_core.artifact.schema import CONFIG_FILE, ArtifactConfig, BaseModelInfo
from steering_core.errors import ArtifactError
from steering_core.methods.base import AttachedMethod, get_method_handler
from steering_core.methods.registry import method_definition
from steering_core.model.sites import decoder_layers, hidden_size_of, model_type_of
from steering_core.steering.site_steering import find_steering


def library_versions() -> dict[str, str]:
    versions = {}
    for package in ("torch", "transformers", "peft", "safetensors", "steering-service"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = "not installed"
    return versions


def _adapter_fields(attached: AttachedMethod) -> dict[str, Any]:
    cfg = attached.config
    steering = find_steering(attached.model)
    fields: dict[str, Any] = {
        "site": steering.site if steering else None,
        "layers": steering.layers if steering else [],
    }
    summary = method_definition(cfg.type).adapter_summary(cfg)
    fields.update(
        adapter_kind=summary.adapter_kind, rank=summary.rank, activation=summary.activation
    )
    return fields


def save_artifact(
    attached: AttachedMethod,
    out_dir: str | Path,
    *,
    base_model_id: str | None = None,
    base_model: BaseModelInfo | None = None,
    training_manifest: dict[str, Any] | None = None,
) -> ArtifactConfig:
    """Write the artifact of an attached method into ``out_dir`` (created if needed).

    ``base_model`` overrides the description of the base (the full method passes the one it
    recorded before training changed the weights).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    info = base_model or attached.base_info or base_model_info(attached.base_model, base_model_id)
    if base_model_id is not None:
        info = info.model_copy(update={"id": base_model_id})
    files = attached.save_payload(out)
    steering = find_steering(attached.model)
    dtype = (
        str(next(steering.parameters()).dtype).removeprefix("torch.")
        if steering is not None
        else info.dtype
    )
    config = ArtifactConfig(
        method=attached.config,
        base_model=info,
        dtype=dtype,
        parameters=count_parameters(attached),
        files=[CONFIG_FILE, *files],
        library_versions=library_versions(),
        training_manifest=training_manifest,
        **_adapter_fields(attached),
    )
    (out / CONFIG_FILE).write_text(config.model_dump_json(indent=2) + "\n")
    return config


def read_artifact_config(artifact_dir: str | Path) -> ArtifactConfig:
    """The artifact's ``steering_config.json``, validated (ArtifactError saying what is wrong)."""
    return read_config(Path(artifact_dir))


def check_base_model(config: ArtifactConfig, model: nn.Module, *, check_hash: bool) -> None:
    """Refuse a base model that differs from the artifact's in a way that matters."""
    actual = {
        "architecture": model_type_of(model),
        "hidden_size": hidden_size_of(model),
        "num_layers": len(decoder_layers(model)),
    }
    expected = config.base_model
    for field, value in actual.items():
        wanted = getattr(expected, field)
        if value != wanted:
            raise ArtifactError(
                f"this adapter was trained on {expected.id!r} ({field}={wanted}); the model it is "
                f"being loaded onto has {field}={value}"
            )
    if check_hash and expected.content_hash is not None:
        found = model_content_hash(model)
        if found is not None and found != expected.content_hash:
            raise ArtifactError(
                f"base model weights differ from those the adapter was trained on "
                f"({expected.id!r}): content hash {found[:12]} != {expected.content_hash[:12]}"
            )


def load_artifact(
    model: nn.Module, artifact_dir: str | Path, *, check_content_hash: bool = False
) -> AttachedMethod:
    """Attach a saved artifact to a freshly loaded base model and return the handle."""
    directory = Path(artifact_dir)
    config = read_artifact_config(directory)
    check_base_model(config, model, check_hash=check_content_hash)
    attached = get_method_handler(config.method.type).load(model, config.method, directory)
    attached.base_info = config.base_model
    for param in attached.model.parameters():
        param.requires_grad_(False)
    attached.model.eval()
    return attached
