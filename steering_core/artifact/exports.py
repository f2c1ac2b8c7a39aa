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
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from steering_core.artifact.schema import ArtifactConfig
from steering_core.artifact.store import read_artifact_config
from steering_core.errors import ArtifactError, SteeringUserError
from steering_core.methods.lora import LORA_DIR
from steering_core.methods.steering_tensors import read_steering_file
from steering_core.model.catalogue import public_model_id
from steering_core.model.sites import sites_for_model_type
from steering_core.steering.adapter_modules import LoReFTIntervention

EXPORT_FORMATS: tuple[str, ...] = ("layer_tensors", "control_vector_gguf", "peft_lora")

LAYER_TENSORS_FILE = "steering_tensors.safetensors"
LAYER_TENSORS_CONFIG = "steering_export.json"
LAYER_TENSORS_README = "README.md"
LAYER_TENSORS_FORMAT = "steering-layer-tensors"
LAYER_TENSORS_VERSION = 1

PEFT_CONFIG = "adapter_config.json"
PEFT_WEIGHTS = "adapter_model.safetensors"
PEFT_EXPORT_INFO = "steering_export.json"

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

# Sites where a constant shift is exactly a constant shift of the decoder layer's output: the
# MLP branch is the last thing added to the residual stream (layer_out = layer_in + attn + mlp,
# proved per family by test_branch_sites_decompose_the_residual_stream). A constant at
# attn_output also changes the MLP's input, so it is not a control vector.
CONTROL_VECTOR_SITES: tuple[str, ...] = ("block_output", "mlp_output")

ACTIVATION_DEFINITIONS: dict[str, str] = {
    "silu": "silu(x) = x * sigmoid(x) (torch.nn.functional.silu)",
    "relu": "relu(x) = max(x, 0) (torch.nn.functional.relu)",
    "gelu": "exact GELU x * Phi(x), erf form (torch.nn.functional.gelu, approximate='none')",
    "tanh": "tanh(x) (torch.tanh)",
}


class ExportNotApplicableError(SteeringUserError):
    """This export does not apply to this artifact; the message says why and what applies."""

    code = "export_not_applicable"


# -- checks ---------------------------------------------------------------------------------------


def _method(config: ArtifactConfig) -> str:
    return config.method.type


def check_export(artifact: str | Path | ArtifactConfig, export_format: str) -> ArtifactConfig:
    """Raise :class:`ExportNotApplicableError` unless ``export_format`` applies to the artifact.

    Reads only ``steering_config.json`` (cheap: the route calls it before copying any tensor).
    Checks that need tensor values (llama.cpp's layer 0) happen in the export itself.
    """
    config = artifact if isinstance(artifact, ArtifactConfig) else read_artifact_config(artifact)
    if export_format not in EXPORT_FORMATS:
        raise ExportNotApplicableError(
            f"unknown export format {export_format!r}; use one of {', '.join(EXPORT_FORMATS)}"
        )
    method = _method(config)
    if export_format == "layer_tensors":
        if method == "lora":
            raise ExportNotApplicableError(
                "a lora adapter has no steering tensors; export it with format 'peft_lora'"
            )
        if method == "full":
            raise ExportNotApplicableError(
                "a full fine-tune has no adapter tensors to export; download its "
                "model.safetensors from the adapter's content instead"
            )
    elif export_format == "control_vector_gguf":
        _check_control_vector(config)
    elif export_format == "peft_lora" and method not in ("lora", "joint"):
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
    return config


def _check_control_vector(config: ArtifactConfig) -> None:
    method = _method(config)
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


def _steering_by_layer(directory: Path, config: ArtifactConfig) -> dict[int, dict[str, Any]]:
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


def _need(layer: int, tensors: dict[str, Any], *names: str) -> list[Any]:
    missing = [n for n in names if n not in tensors]
    if missing:
        raise ArtifactError(
            f"layer {layer} lacks tensors {missing}; it has {sorted(tensors)} (corrupted artifact?)"
        )
    return [tensors[n] for n in names]


def _plain_layer_tensors(
    layer: int, kind: str, tensors: dict[str, Any], hidden: int, rank: int | None
) -> dict[str, torch.Tensor]:
    """Our parameter names -> the export's plain names (``vector``, ``W_down``, ``W_up``, ...)."""
    if kind == "vector":
        (vector,) = _need(layer, tensors, "vector")
        return {"vector": vector}
    if kind in ("linear", "nonlinear"):
        down, up = _need(layer, tensors, "down.weight", "up.weight")
        return {"W_down": down, "W_up": up}
    if kind == "loreft":
        raw, weight, bias = _need(layer, tensors, "rotation_raw", "source.weight", "source.bias")
        # R exactly as inference computes it (QR of rotation_raw), not a re-derivation.
        module = LoReFTIntervention(hidden, int(rank or raw.shape[0]), dtype=raw.dtype)
        module.import_state({"rotation_raw": raw, "source.weight": weight, "source.bias": bias})
        with torch.no_grad():
            rotation = module.rotation().detach()
        return {"R": rotation, "W": weight, "b": bias}
    raise ArtifactError(f"unknown adapter kind {kind!r} in the artifact config")


def _formula(kind: str) -> str:
    return {
        "vector": "h <- h + vector",
        "linear": "h <- h + W_up @ (W_down @ h)",
        "nonlinear": "h <- h + W_up @ act(W_down @ h)",
        "loreft": "h <- h + R^T @ (W @ h + b - R @ h)",
    }[kind]


def _site_module_path(architecture: str, site: str) -> str | None:
    try:
        entry = sites_for_model_type(architecture)
    except SteeringUserError:
        return None
    sub = entry.site_path(site)
    return f"{entry.layers_path}.{{i}}" + (f".{sub}" if sub else "")


_SITE_WORDS = {
    "block_output": "the decoder layer's output: the residual stream after both residual adds",
    "mlp_output": "the value the MLP branch adds to the residual stream (before that add)",
    "attn_output": "the value the attention branch adds to the residual stream (before that add)",
}


def _base_model_json(config: ArtifactConfig) -> dict[str, Any]:
    return config.base_model.model_dump()


# -- layer tensors ---------------------------------------------------------------------------------


def export_layer_tensors(artifact_dir: str | Path, out_dir: str | Path) -> dict[str, Any]:
    """Write the steering adapter as plain per-layer tensors plus a JSON description.

    Files written into ``out_dir`` (created if needed):

    - ``steering_tensors.safetensors``: ``layers.{i}.{site}.vector`` [H] for vector adapters;
      ``layers.{i}.{site}.W_down`` [r, H] and ``layers.{i}.{site}.W_up`` [H, r] for linear and
      nonlinear ones (``f(h) = W_up @ act(W_down @ h)``, act the identity for linear);
      ``layers.{i}.{site}.R`` [r, H] (orthonormal rows), ``.W`` [r, H] and ``.b`` [r] for
      LoReFT (``f(h) = R^T (W h + b - R h)``). ``i`` is the 0-based decoder layer index; the
      shift is added, ``h <- h + f(h)``, in the trained dtype, at every token position (a ReFT
      adapter with prompt positions: at those only; the JSON's ``application`` says which).
    - ``steering_export.json``: format ``steering-layer-tensors`` v1, method, site (and the
      site's module path in the base architecture), kind, rank, activation (and its exact
      definition), layers, formula, tensor names and shapes, base model description.
    - ``README.md``: the same in prose with a torch snippet.

    Applies to post_block, the steering half of joint, and reft; lora and full raise
    :class:`ExportNotApplicableError` naming what applies instead. Returns the JSON written.
    """
    directory = Path(artifact_dir)
    config = check_export(directory, "layer_tensors")
    kind = str(config.adapter_kind)
    site = str(config.site)
    hidden = config.base_model.hidden_size
    by_layer = _steering_by_layer(directory, config)

    tensors: dict[str, torch.Tensor] = {}
    for layer in config.layers:
        plain = _plain_layer_tensors(layer, kind, by_layer[layer], hidden, config.rank)
        for name, tensor in plain.items():
            tensors[f"layers.{layer}.{site}.{name}"] = tensor.detach().to("cpu").contiguous()

    description: dict[str, Any] = {
        "format": LAYER_TENSORS_FORMAT,
        "format_version": LAYER_TENSORS_VERSION,
        "tensors_file": LAYER_TENSORS_FILE,
        "method": _method(config),
        "site": site,
        "site_description": _SITE_WORDS.get(site, site),
        "site_module": _site_module_path(config.base_model.architecture, site),
        "kind": kind,
        "rank": config.rank,
        "activation": config.activation if kind == "nonlinear" else None,
        "activation_definition": (
            ACTIVATION_DEFINITIONS.get(str(config.activation)) if kind == "nonlinear" else None
        ),
        "layers": list(config.layers),
        "layer_indexing": "0-based index into the base model's decoder layers",
        "formula": _formula(kind),
        "application": _application(config),
        "dtype": config.dtype,
        "tensors": {name: list(t.shape) for name, t in sorted(tensors.items())},
        "base_model": _base_model_json(config),
    }
    if _method(config) == "joint":
        description["note"] = (
            "steering half of a joint adapter only; the LoRA half is the 'peft_lora' export, and "
            "the trained model applies both"
        )

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", "export": LAYER_TENSORS_FORMAT, "site": site, "kind": kind}
    save_file(tensors, str(out / LAYER_TENSORS_FILE), metadata=metadata)
    (out / LAYER_TENSORS_CONFIG).write_text(json.dumps(description, indent=2) + "\n")
    (out / LAYER_TENSORS_README).write_text(_layer_tensors_readme(description))
    return description


def _application(config: ArtifactConfig) -> str:
    """Where f(h) is added: every token, or (ReFT as pyreft runs it) the prompt's ends only."""
    where = "at every token position (prompt and generated tokens)"
    first_last = getattr(config.method, "first_last", None)
    if first_last is not None:
        first, last = first_last
        where = (
            f"only at the first {first} and the last {last} tokens of the prompt (counted among "
            "each row's own tokens, padding excluded), never on generated tokens"
        )
    return (
        "for every steered layer i, add f(h) to the output of the site module of layer i, "
        f"{where}; a strength s scales f(h)"
    )


def _layer_tensors_readme(d: dict[str, Any]) -> str:
    kind, site = d["kind"], d["site"]
    module = d["site_module"] or f"the {site} site of layer {{i}}"
    names = {
        "vector": "vector",
        "linear": "W_down, W_up",
        "nonlinear": "W_down, W_up",
        "loreft": "R, W, b",
    }[kind]
    body = {
        "vector": "shift = t['vector']",
        "linear": "shift = (h @ t['W_down'].T) @ t['W_up'].T",
        "nonlinear": (
            f"shift = {_torch_activation(d['activation'])}(h @ t['W_down'].T) @ t['W_up'].T"
        ),
        "loreft": "shift = (h @ t['W'].T + t['b'] - h @ t['R'].T) @ t['R']",
    }[kind]
    lines = [
        f"# Steering adapter export ({LAYER_TENSORS_FORMAT} v{LAYER_TENSORS_VERSION})",
        "",
        f"Base model: `{d['base_model']['id']}` ({d['base_model']['architecture']}, hidden size "
        f"{d['base_model']['hidden_size']}, {d['base_model']['num_layers']} layers).",
        f"Method `{d['method']}`, kind `{kind}`, site `{site}`: {d['site_description']}.",
        f"Layers (0-based): {d['layers']}.",
        "",
        f"For each steered layer `i`, with tensors `layers.{{i}}.{site}.{{{names}}}` from "
        f"`{LAYER_TENSORS_FILE}`, add the shift to the output of `{module}`: "
        f"`{d['formula']}`. Where: {d['application'].split(', ', 1)[1]}.",
        "",
        "```python",
        "import torch",
        "from safetensors.torch import load_file",
        "",
        f"tensors = load_file('{LAYER_TENSORS_FILE}')",
        "",
        "def hook_for(i):",
        "    prefix = f'layers.{i}.'",
        "    t = {k.split('.')[-1]: v for k, v in tensors.items() if k.startswith(prefix)}",
        "    def hook(module, args, output):",
        "        h = output[0] if isinstance(output, tuple) else output",
        f"        {body}",
        "        h = h + shift.to(h.dtype)",
        "        return (h, *output[1:]) if isinstance(output, tuple) else h",
        "    return hook",
        "",
        f"for i in {d['layers']}:",
        f"    model.get_submodule(f'{module}').register_forward_hook(hook_for(i))",
        "```",
        "",
    ]
    if d.get("note"):
        lines += [f"Note: {d['note']}.", ""]
    return "\n".join(lines)


def _torch_activation(name: str | None) -> str:
    return {
        "silu": "torch.nn.functional.silu",
        "relu": "torch.relu",
        "gelu": "torch.nn.functional.gelu",
        "tanh": "torch.tanh",
    }.get(str(name), "torch.nn.functional.silu")


# -- llama.cpp control vector ---------------------------------------------------------------------


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
    import gguf  # the [train] extra; imported here so the rest of the module needs no gguf
    import numpy as np

    directory = Path(artifact_dir)
    config = check_export(directory, "control_vector_gguf")
    by_layer = _steering_by_layer(directory, config)
    hidden = config.base_model.hidden_size

    directions: dict[int, Any] = {}
    dropped: list[int] = []
    for layer in config.layers:
        (vector,) = _need(layer, by_layer[layer], "vector")
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
    arch = config.base_model.architecture
    model_hint = LLAMA_CPP_ARCH.get(arch, arch)
    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    writer = gguf.GGUFWriter(str(out), GGUF_ARCH)
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
    return {
        "file": out.name,
        "model_hint": model_hint,
        "layers": sorted(directions),
        "tensors": {f"direction.{i}": [hidden] for i in sorted(directions)},
        "dropped_layers": dropped,
        "exact": not dropped,
    }


# -- peft LoRA ------------------------------------------------------------------------------------


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

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    # peft saved the path the model was loaded from (this server's model cache); other machines
    # know the model by its public name
    public = public_model_id(config.base_model.id)
    peft_config["base_model_name_or_path"] = public
    (out / PEFT_CONFIG).write_text(json.dumps(peft_config, indent=2) + "\n", encoding="utf-8")
    shutil.copyfile(source / PEFT_WEIGHTS, out / PEFT_WEIGHTS)
    description: dict[str, Any] = {
        "format": "peft-lora",
        "method": _method(config),
        "files": [PEFT_CONFIG, PEFT_WEIGHTS],
        "rank": peft_config.get("r"),
        "alpha": peft_config.get("lora_alpha"),
        "target_modules": peft_config.get("target_modules"),
        "tensors": {name: list(t.shape) for name, t in sorted(weights.items())},
        "base_model": _base_model_json(config),
        "base_model_name_or_path": public,
        "load_with": "peft.PeftModel.from_pretrained(base_model, this_directory), or "
        "peft.AutoPeftModelForCausalLM.from_pretrained(this_directory) where "
        "base_model_name_or_path resolves",
    }
    if _method(config) == "joint":
        description["note"] = (
            "LoRA half of a joint adapter only (the artifact's lora_only mode); the steering half "
            "is the 'layer_tensors' export"
        )
    (out / PEFT_EXPORT_INFO).write_text(json.dumps(description, indent=2) + "\n")
    return description


# -- dispatch -------------------------------------------------------------------------------------


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
    raise ExportNotApplicableError(
        f"unknown export format {export_format!r}; use one of {', '.join(EXPORT_FORMATS)}"
    )
