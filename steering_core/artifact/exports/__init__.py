"""Exports of a saved adapter artifact into formats other tools read without this code base.

Three exports, each a pure function of the artifact directory (no base model is loaded):

``layer_tensors`` (:func:`export_layer_tensors`): a directory with

- ``steering_tensors.safetensors``: plain per-layer tensors, named ``layers.{i}.{site}.{name}``
  with ``i`` the 0-based decoder-layer index (Hugging Face ``model.layers[i]``) and ``site`` one
  of ``block_output`` / ``mlp_output`` / ``attn_output``:

  ========== ================================ ===========================================
  kind       tensors (shape)                  shift added at the site, ``h <- h + f(h)``
  ========== ================================ ===========================================
  vector     ``vector`` [H]                   ``f(h) = vector``
  linear     ``W_down`` [r, H], ``W_up`` [H, r] ``f(h) = W_up @ (W_down @ h)``
  nonlinear  ``W_down`` [r, H], ``W_up`` [H, r] ``f(h) = W_up @ act(W_down @ h)``
  loreft     ``R`` [r, H], ``W`` [r, H], ``b`` [r] ``f(h) = R^T @ (W @ h + b - R @ h)``
  ========== ================================ ===========================================

  in the dtype the adapter was trained in (the artifact's ``dtype``);
- ``steering_export.json``: what is needed to apply them: format name and version, method,
  site (with the module path of the site in the base architecture, e.g. ``model.layers.{i}``
  or ``model.layers.{i}.mlp``), kind, rank, activation, layers, the formula, the tensor names
  and shapes, and the base model (id, architecture, hidden size, layer count, dtype, hash);
- ``README.md``: the same in words, with a short torch snippet.

  It applies to ``post_block`` (every adapter kind, every site), the steering half of ``joint``
  (the LoRA half is :func:`export_peft_lora`) and ``reft`` (its R, W, b).

``control_vector_gguf`` (:func:`export_control_vector_gguf`): a llama.cpp control-vector file.
See that function for the layer numbering, which was read from llama.cpp's source.

``peft_lora`` (:func:`export_peft_lora`): a plain peft adapter directory
(``adapter_config.json`` + ``adapter_model.safetensors``) for ``lora`` artifacts and the LoRA
half of ``joint`` ones; ``peft.PeftModel.from_pretrained(base, out_dir)`` loads it.

An export that does not apply to an artifact raises :class:`ExportNotApplicableError` (a
:class:`~steering_core.errors.SteeringUserError`) naming the reason and the export that applies.

The files:

- :mod:`.common`: the formats, :class:`ExportNotApplicableError`, :func:`check_export`, and
  the saved steering tensors by layer (what the exports share);
- :mod:`.layer_tensors`: ``layer_tensors`` (tensors, JSON description, README);
- :mod:`.control_vector`: ``control_vector_gguf`` (llama.cpp);
- :mod:`.peft_lora`: ``peft_lora``;
- this ``__init__``: every public name of the above, and :func:`run_export` (one export by
  its format name).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from steering_core.artifact.exports.common import (
    CONTROL_VECTOR_SITES,
    EXPORT_FORMATS,
    ExportNotApplicableError,
    check_export,
    unknown_format,
)
from steering_core.artifact.exports.control_vector import (
    GGUF_ARCH,
    LLAMA_CPP_ARCH,
    export_control_vector_gguf,
)
from steering_core.artifact.exports.layer_tensors import (
    ACTIVATION_DEFINITIONS,
    LAYER_TENSORS_CONFIG,
    LAYER_TENSORS_FILE,
    LAYER_TENSORS_FORMAT,
    LAYER_TENSORS_README,
    LAYER_TENSORS_VERSION,
    export_layer_tensors,
)
from steering_core.artifact.exports.peft_lora import (
    PEFT_CONFIG,
    PEFT_EXPORT_INFO,
    PEFT_WEIGHTS,
    export_peft_lora,
)

__all__ = [
    "ACTIVATION_DEFINITIONS",
    "CONTROL_VECTOR_SITES",
    "EXPORT_FORMATS",
    "GGUF_ARCH",
    "LAYER_TENSORS_CONFIG",
    "LAYER_TENSORS_FILE",
    "LAYER_TENSORS_FORMAT",
    "LAYER_TENSORS_README",
    "LAYER_TENSORS_VERSION",
    "LLAMA_CPP_ARCH",
    "PEFT_CONFIG",
    "PEFT_EXPORT_INFO",
    "PEFT_WEIGHTS",
    "ExportNotApplicableError",
    "check_export",
    "export_control_vector_gguf",
    "export_layer_tensors",
    "export_peft_lora",
    "run_export",
]


def run_export(
    export_format: str, artifact_dir: str | Path, out_dir: str | Path, **options: Any
) -> Path:
    """Run one export into ``out_dir``; return what to hand out (a directory, or the .gguf)."""
    out = Path(out_dir)
    if export_format == "layer_tensors":
        export_layer_tensors(artifact_dir, out)
        return out
    if export_format == "control_vector_gguf":
        path = out / "control_vector.gguf"
        export_control_vector_gguf(artifact_dir, path, **options)
        return path
    if export_format == "peft_lora":
        export_peft_lora(artifact_dir, out)
        return out
    raise unknown_format(export_format)
