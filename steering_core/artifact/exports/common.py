"""What the exports share: the formats, the refusal error, the applicability check, and the
saved steering tensors grouped by layer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steering_core.artifact.schema import ArtifactConfig
from steering_core.artifact.store import read_artifact_config
from steering_core.errors import ArtifactError, SteeringUserError
from steering_core.methods.steering_tensors import read_steering_file

EXPORT_FORMATS: tuple[str, ...] = ("layer_tensors", "control_vector_gguf", "peft_lora")

# Sites where a constant shift is exactly a constant shift of the decoder layer's output: the
# MLP branch is the last thing added to the residual stream (layer_out = layer_in + attn + mlp,
# proved per family by test_branch_sites_decompose_the_residual_stream). A constant at
# attn_output also changes the MLP's input, so it is not a control vector.
CONTROL_VECTOR_SITES: tuple[str, ...] = ("block_output", "mlp_output")


class ExportNotApplicableError(SteeringUserError):
    """This export does not apply to this artifact; the message says why and what applies."""

    code = "export_not_applicable"


def unknown_format(export_format: str) -> ExportNotApplicableError:
    """The refusal of a format that is none of :data:`EXPORT_FORMATS`."""
    return ExportNotApplicableError(
        f"unknown export format {export_format!r}; use one of {', '.join(EXPORT_FORMATS)}"
    )


def method_of(config: ArtifactConfig) -> str:
    """The artifact's method type (``post_block``, ``joint``, ``reft``, ``lora``, ``full``)."""
    return config.method.type


def base_model_json(config: ArtifactConfig) -> dict[str, Any]:
    """The base model's description as the exports' JSON records it."""
    return config.base_model.model_dump()


# -- checks ---------------------------------------------------------------------------------------


def check_export(artifact: str | Path | ArtifactConfig, export_format: str) -> ArtifactConfig:
    """Raise :class:`ExportNotApplicableError` unless ``export_format`` applies to the artifact.

    Reads only ``steering_config.json`` (cheap: the route calls it before copying any tensor).
    Checks that need tensor values (llama.cpp's layer 0) happen in the export itself.
    """
    config = artifact if isinstance(artifact, ArtifactConfig) else read_artifact_config(artifact)
    if export_format not in EXPORT_FORMATS:
        raise unknown_format(export_format)
    if export_format == "layer_tensors":
        _check_layer_tensors(config)
    elif export_format == "control_vector_gguf":
        _check_control_vector(config)
    elif export_format == "peft_lora":
        _check_peft_lora(config)
    return config


def _check_layer_tensors(config: ArtifactConfig) -> None:
    method = method_of(config)
    if method == "lora":
        raise ExportNotApplicableError(
            "a lora adapter has no steering tensors; export it with format 'peft_lora'"
        )
    if method == "full":
        raise ExportNotApplicableError(
            "a full fine-tune has no adapter tensors to export; download its "
            "model.safetensors from the adapter's content instead"
        )


def _check_peft_lora(config: ArtifactConfig) -> None:
    method = method_of(config)
    if method in ("lora", "joint"):
        return
    if method == "full":
        raise ExportNotApplicableError(
            "a full fine-tune has no LoRA weights; download its model.safetensors from "
            "the adapter's content instead"
        )
    other = "'layer_tensors'" + (
        " or 'control_vector_gguf'"
        if method == "post_block" and config.adapter_kind == "vector"
        else ""
    )
    raise ExportNotApplicableError(
        f"a {method} adapter has no LoRA weights (peft_lora applies to lora and joint "
        f"adapters); export it with format {other}"
    )


def _check_control_vector(config: ArtifactConfig) -> None:
    method = method_of(config)
    if method in ("lora", "full"):
        hint = "'peft_lora'" if method == "lora" else "none (download model.safetensors)"
        raise ExportNotApplicableError(
            f"a {method} adapter changes weights, not activations: it is not a control vector; "
            f"the export that applies: {hint}"
        )
    if method == "reft":
        raise ExportNotApplicableError(
            "a LoReFT intervention R^T(W h + b - R h) depends on the hidden state h, so it is not "
            "a constant control vector; export it with format 'layer_tensors'"
        )
    kind = config.adapter_kind
    if kind != "vector":
        formula = "W_up W_down h" if kind == "linear" else "W_up act(W_down h)"
        raise ExportNotApplicableError(
            f"only 'vector' adapters are control vectors; this adapter is {kind!r} "
            f"(f(h) = {formula} depends on the hidden state h, whatever its rank), so llama.cpp "
            "cannot apply it as a fixed direction; export it with format 'layer_tensors'"
        )
    if config.site not in CONTROL_VECTOR_SITES:
        raise ExportNotApplicableError(
            f"a vector at site {config.site!r} is not a control vector: llama.cpp adds control "
            "vectors to each layer's output (block_output), and a constant added to the "
            "attention branch also changes the MLP's input; export it with format "
            "'layer_tensors'"
        )


# -- reading the steering tensors -----------------------------------------------------------------


def steering_by_layer(directory: Path, config: ArtifactConfig) -> dict[int, dict[str, Any]]:
    """The saved steering tensors grouped by layer: ``{layer: {name: tensor}}``."""
    by_layer: dict[int, dict[str, Any]] = {}
    for key, tensor in read_steering_file(directory).items():
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit():
            raise ArtifactError(f"unexpected tensor {key!r} in the artifact's steering file")
        by_layer.setdefault(int(parts[1]), {})[parts[2]] = tensor
    if sorted(by_layer) != list(config.layers):
        raise ArtifactError(
            f"the steering file holds layers {sorted(by_layer)}, the config names {config.layers}"
        )
    return by_layer


def need_tensors(layer: int, tensors: dict[str, Any], *names: str) -> list[Any]:
    """The named tensors of one layer, in order; an :class:`ArtifactError` if any is missing."""
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ArtifactError(
            f"layer {layer} lacks tensors {missing}; it has {sorted(tensors)} (corrupted artifact?)"
        )
    return [tensors[n] for n in names]
