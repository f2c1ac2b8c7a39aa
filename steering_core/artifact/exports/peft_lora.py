"""The ``peft_lora`` export: the LoRA weights of a ``lora`` or ``joint`` artifact as a plain
peft adapter directory (see :func:`export_peft_lora`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.torch import load_file

from steering_core.artifact.exports.common import base_model_json, check_export, method_of
from steering_core.artifact.schema import ArtifactConfig
from steering_core.errors import ArtifactError
from steering_core.methods.lora import LORA_DIR
from steering_core.model.catalogue import public_model_id

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_EXPORT_INFO = "steering_export.json"


def export_peft_lora(artifact_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the LoRA weights of a ``lora`` or ``joint`` artifact as a plain peft directory.

    Files: ``adapter_config.json`` and ``adapter_model.safetensors`` exactly as peft saved them
    under the artifact's ``lora/`` (tensor names ``base_model.model.<module path>.lora_A.weight``
    [r, in] and ``.lora_B.weight`` [out, r]), plus ``steering_export.json`` describing the base
    model (peft ignores it). ``peft.PeftModel.from_pretrained(base, out_dir)`` loads it.

    For a joint adapter this is its LoRA half alone, i.e. the artifact's ``lora_only`` inference
    mode; the steering half is the ``layer_tensors`` (or ``control_vector_gguf``) export.
    post_block, reft and full raise :class:`ExportNotApplicableError`. Returns the description.
    """
    directory = Path(artifact_dir)
    config = check_export(directory, "peft_lora")
    source = directory / LORA_DIR
    peft_config, weights = _read_lora(directory, source)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # peft saved the path the model was loaded from (this server's model cache); other machines
    # know the model by its public name
    public = public_model_id(config.base_model.id)
    peft_config["base_model_name_or_path"] = public
    (out / PEFT_CONFIG).write_text(json.dumps(peft_config, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(source / PEFT_WEIGHTS, out / PEFT_WEIGHTS)
    description = _description(config, peft_config, weights, public)
    (out / PEFT_EXPORT_INFO).write_text(json.dumps(description, indent=2) + "\n")
    return description


def _read_lora(directory: Path, source: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """The artifact's peft config and LoRA tensors, checked (an :class:`ArtifactError` if not)."""
    for name in (PEFT_CONFIG, PEFT_WEIGHTS):
        if not (source / name).is_file():
            raise ArtifactError(f"artifact {directory} has no {LORA_DIR}/{name}")
    try:
        peft_config = json.loads((source / PEFT_CONFIG).read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ArtifactError(f"{LORA_DIR}/{PEFT_CONFIG} is not valid JSON: {exc}") from exc
    if not isinstance(peft_config, dict) or peft_config.get("peft_type") != "LORA":
        raise ArtifactError(f"{LORA_DIR}/{PEFT_CONFIG} does not describe a peft LoRA adapter")
    try:
        weights = load_file(str(source / PEFT_WEIGHTS))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ArtifactError(f"{LORA_DIR}/{PEFT_WEIGHTS} is unreadable: {exc}") from exc
    foreign = [k for k in weights if "lora_" not in k]
    if foreign:
        raise ArtifactError(f"{LORA_DIR}/{PEFT_WEIGHTS} holds non-LoRA tensors {foreign[:5]}")
    return peft_config, weights


def _description(
    config: ArtifactConfig, peft_config: dict[str, Any], weights: dict[str, Any], public: str
) -> dict[str, Any]:
    """The export's ``steering_export.json``: the LoRA's shape and the base model."""
    description: dict[str, Any] = {
        "format": "peft-lora",
        "method": method_of(config),
        "files": [PEFT_CONFIG, PEFT_WEIGHTS],
        "rank": peft_config.get("r"),
        "alpha": peft_config.get("lora_alpha"),
        "target_modules": peft_config.get("target_modules"),
        "tensors": {name: list(t.shape) for name, t in sorted(weights.items())},
        "base_model": base_model_json(config),
        "base_model_name_or_path": public,
        "load_with": "peft.PeftModel.from_pretrained(base_model, this_directory), or "
        "peft.AutoPeftModelForCausalLM.from_pretrained(this_directory) where "
        "base_model_name_or_path resolves",
    }
    if method_of(config) == "joint":
        description["note"] = (
            "LoRA half of a joint adapter only (the artifact's lora_only mode); the steering half "
            "is the 'layer_tensors' export"
        )
    return description
