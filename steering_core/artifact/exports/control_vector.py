"""The ``control_vector_gguf`` export: a ``vector`` steering adapter as a llama.cpp
control-vector file (see :func:`export_control_vector_gguf` for the layer numbering, which was
read from llama.cpp's source)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from steering_core.artifact.exports.common import (
    ExportNotApplicableError,
    check_export,
    need_tensors,
    steering_by_layer,
)
from steering_core.artifact.schema import ArtifactConfig
from steering_core.errors import ArtifactError

GGUF_ARCH = "controlvector"

# Hugging Face model_type -> llama.cpp's architecture name (its ``general.architecture``), which
# llama.cpp's own cvector-generator writes as ``controlvector.model_hint``.
LLAMA_CPP_ARCH: dict[str, str] = {
    "llama": "llama",
    "mistral": "llama",  # convert_hf_to_gguf.py converts MistralForCausalLM as llama
    "qwen2": "qwen2",
    "qwen3": "qwen3",
    "gemma": "gemma",
    "gemma2": "gemma2",
    "gemma3": "gemma3",
    "gemma3_text": "gemma3",
    "gpt2": "gpt2",
    "gpt_neox": "gptneox",
}


def export_control_vector_gguf(
    artifact_dir: str | Path, out_path: str | Path, *, drop_layer_0: bool = False
) -> dict[str, Any]:
    """Write a ``vector`` steering adapter as a llama.cpp control-vector GGUF file.

    Format (as llama.cpp's ``cvector-generator`` writes and ``common_control_vector_load``
    reads): ``general.architecture = "controlvector"``, ``controlvector.model_hint`` = the base
    architecture's llama.cpp name (``llama``, ``qwen2``, ``gemma3``...; llama.cpp does not check
    it), ``controlvector.layer_count`` (int32) = the number of ``direction`` tensors written, and
    one float32 tensor ``direction.{n}`` of shape [hidden] per steered layer.

    Layer numbering, read from llama.cpp (ggml-org/llama.cpp):

    - ``common/common.cpp``, ``common_control_vector_load_one``: parses ``n`` from
      ``direction.n``, rejects ``n == 0`` ("invalid (zero) direction tensor layer index") and
      stores the vector at ``data[n_embd * (n - 1)]`` ("layer 1 at [0]");
    - ``src/llama-adapter.cpp``, ``llama_adapter_cvec::apply``: for ``il`` in ``1..n_layer-1``
      copies ``data[n_embd * (il - 1)]`` into ``tensors[il]`` (``init`` pushes ``nullptr`` for
      ``tensors[0]``: "there's never a tensor for layer 0"); ``apply_to(ctx, cur, il)`` adds
      ``tensors[il]`` to ``cur``;
    - ``src/models/llama.cpp`` (graph, ``for (int il = 0; il < n_layer; ++il)``): after the FFN
      residual add, ``cur = build_cvec(cur, il)`` (``llm_graph_context::build_cvec`` in
      ``src/llama-graph.cpp`` calls ``cvec->apply_to(ctx0, cur, il)``), then ``l_out``.

    So ``direction.n`` is added to the output of 0-based layer ``n`` (blk.n, Hugging Face
    ``model.layers[n]``): exactly our ``block_output`` site of layer ``n``, and our layer ``i``
    is written as ``direction.{i}`` (no offset). llama.cpp cannot steer layer 0: a steered layer
    0 whose vector is exactly zero is skipped; a non-zero one is refused unless ``drop_layer_0``
    (then the file is not the trained adapter, and the summary says so).

    ``mlp_output`` vectors are exported too: the MLP branch is the last term of
    ``layer_out = layer_in + attn + mlp``, so a constant added there shifts the layer output by
    the same constant. ``attn_output`` vectors and every h-dependent kind (linear, nonlinear,
    LoReFT, at any rank) are refused: they are not constant shifts of the block output. For
    joint adapters the file holds the steering half only (llama.cpp loads the LoRA half
    separately, after ``convert_lora_to_gguf.py`` on the ``peft_lora`` export).

    ``--control-vector-scaled FILE s`` in llama.cpp multiplies the vectors by ``s`` (our
    steering strength). Returns a summary (layers written, dropped, model hint).
    """
    import gguf  # the [train] extra; imported here so the rest of the package needs no gguf

    directory = Path(artifact_dir)
    config = check_export(directory, "control_vector_gguf")
    directions, dropped = _directions(directory, config, drop_layer_0=drop_layer_0)
    arch = config.base_model.architecture
    model_hint = LLAMA_CPP_ARCH.get(arch, arch)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    _write_directions(gguf.GGUFWriter(str(out), GGUF_ARCH), model_hint, directions)
    return _summary(out, model_hint, sorted(directions), dropped, config.base_model.hidden_size)


def _summary(
    out: Path, model_hint: str, layers: list[int], dropped: list[int], hidden: int
) -> dict[str, Any]:
    """What the export returns: the file, the layers written and dropped, the model hint."""
    return {
        "file": out.name,
        "model_hint": model_hint,
        "layers": layers,
        "tensors": {f"direction.{i}": [hidden] for i in layers},
        "dropped_layers": dropped,
        "exact": not dropped,
    }


def _directions(
    directory: Path, config: ArtifactConfig, *, drop_layer_0: bool
) -> tuple[dict[int, Any], list[int]]:
    """Each layer's vector as float32 numpy, by layer, and the layers dropped (layer 0 only).

    Refuses (:class:`ExportNotApplicableError`) a non-zero layer-0 vector unless
    ``drop_layer_0``, and an export left with no layer llama.cpp can steer.
    """
    import numpy as np

    by_layer = steering_by_layer(directory, config)
    hidden = config.base_model.hidden_size
    directions: dict[int, Any] = {}
    dropped: list[int] = []
    for layer in config.layers:
        (vector,) = need_tensors(layer, by_layer[layer], "vector")
        values = vector.detach().to(torch.float32).reshape(-1).numpy().astype(np.float32)
        if values.shape != (hidden,):
            raise ArtifactError(
                f"layer {layer} vector has shape {tuple(vector.shape)}, expected ({hidden},)"
            )
        if layer == 0:
            if not np.any(values):
                continue  # a zero shift: skipping it is exact
            if not drop_layer_0:
                norm = float(np.linalg.norm(values))
                raise ExportNotApplicableError(
                    "llama.cpp never applies a control vector after layer 0 (its loader rejects "
                    f"direction.0), and this adapter steers layer 0 (|v| = {norm:.4g}); retrain "
                    "with site.layers excluding 0, or ask for drop_layer_0 to export the other "
                    "layers (the file then differs from the trained adapter)"
                )
            dropped.append(0)
            continue
        directions[layer] = values
    if not directions:
        raise ExportNotApplicableError(
            "no layer llama.cpp can steer is left to export (layer 0 only, or all-zero vectors)"
        )
    return directions, dropped


def _write_directions(writer: Any, model_hint: str, directions: dict[int, Any]) -> None:
    """Write the control-vector keys and one ``direction.{n}`` per layer, then close the file."""
    try:
        writer.add_string(f"{GGUF_ARCH}.model_hint", model_hint)
        writer.add_int32(f"{GGUF_ARCH}.layer_count", len(directions))
        for layer in sorted(directions):
            writer.add_tensor(f"direction.{layer}", directions[layer])
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
