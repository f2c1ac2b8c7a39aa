"""Where the steering sites live in each supported architecture: the one site table.

For each architecture family the table names, relative to the causal-LM module:

- ``layers_path``: the list of decoder layers; the ``block_output`` site is each layer's output
  (the residual stream after both residual adds);
- ``attn_output``: the submodule (relative to a layer) whose output is the value the attention
  branch adds to the residual stream. In Llama-style layers that is ``self_attn``; Gemma 2/3
  normalise the branch before adding it, so the site is ``post_attention_layernorm``'s output;
  GPT-NeoX adds the branch after a dropout module;
- ``mlp_output``: likewise for the MLP branch (``mlp``, ``post_feedforward_layernorm``, ...);
- ``down_proj``: the linear layer that writes the MLP's output into the residual stream (joint
  adaptation projects the steering adapter out of its LoRA subspace);
- ``lora_targets``: the seven projections (or the architecture's equivalent) LoRA adapts.

This module is torch-free: it only walks attributes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from steering_core.errors import UnsupportedArchitectureError

LLAMA_LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class ArchitectureSites:
    family: str
    model_types: tuple[str, ...]
    layers_path: str
    attn_output: str
    mlp_output: str
    down_proj: str
    lora_targets: tuple[str, ...]

    def site_path(self, site: str) -> str | None:
        """Path of the site module relative to a decoder layer (None: the layer itself)."""
        if site == "block_output":
            return None
        if site == "attn_output":
            return self.attn_output
        if site == "mlp_output":
            return self.mlp_output
        raise ValueError(f"unknown site {site!r}; expected block_output, mlp_output or attn_output")


def _llama_like(family: str, model_types: tuple[str, ...]) -> ArchitectureSites:
    return ArchitectureSites(
        family=family,
        model_types=model_types,
        layers_path="model.layers",
        attn_output="self_attn",
        mlp_output="mlp",
        down_proj="mlp.down_proj",
        lora_targets=LLAMA_LORA_TARGETS,
    )


def _gemma_sandwich(
    family: str, model_types: tuple[str, ...], layers_path: str
) -> ArchitectureSites:
    # Gemma 2/3 normalise each branch before the residual add: the site is after that norm.
    return ArchitectureSites(
        family=family,
        model_types=model_types,
        layers_path=layers_path,
        attn_output="post_attention_layernorm",
        mlp_output="post_feedforward_layernorm",
        down_proj="mlp.down_proj",
        lora_targets=LLAMA_LORA_TARGETS,
    )


SITE_TABLE: tuple[ArchitectureSites, ...] = (
    _llama_like("llama", ("llama",)),
    _llama_like("mistral", ("mistral",)),
    _llama_like("qwen2", ("qwen2",)),
    _llama_like("qwen3", ("qwen3",)),
    # Gemma 1: post_attention_layernorm is the MLP's *input* norm, so the layout is Llama's.
    _llama_like("gemma", ("gemma",)),
    _gemma_sandwich("gemma2", ("gemma2",), "model.layers"),
    _gemma_sandwich("gemma3_text", ("gemma3_text",), "model.layers"),
    _gemma_sandwich("gemma3", ("gemma3",), "model.language_model.layers"),
    ArchitectureSites(
        family="gpt2",
        model_types=("gpt2",),
        layers_path="transformer.h",
        attn_output="attn",
        mlp_output="mlp",
        down_proj="mlp.c_proj",
        lora_targets=("c_attn", "c_proj", "c_fc"),
    ),
    ArchitectureSites(
        family="gpt_neox",
        model_types=("gpt_neox",),
        layers_path="gpt_neox.layers",
        # GPT-NeoX adds dropout(branch) to the residual: the dropout modules' outputs are the sites.
        attn_output="post_attention_dropout",
        mlp_output="post_mlp_dropout",
        down_proj="mlp.dense_4h_to_h",
        lora_targets=("query_key_value", "dense", "dense_h_to_4h", "dense_4h_to_h"),
    ),
)

_BY_MODEL_TYPE = {mt: entry for entry in SITE_TABLE for mt in entry.model_types}


def supported_model_types() -> list[str]:
    return sorted(_BY_MODEL_TYPE)


def sites_for_model_type(model_type: str) -> ArchitectureSites:
    try:
        return _BY_MODEL_TYPE[model_type]
    except KeyError:
        raise UnsupportedArchitectureError(
            f"architecture {model_type!r} is not supported; supported model types: "
            + ", ".join(supported_model_types())
        ) from None


def get_submodule(root: Any, path: str) -> Any:
    """Follow a dotted attribute path (``model.layers``) from ``root``."""
    node = root
    for part in path.split("."):
        node = getattr(node, part)
    return node


def unwrap_model(model: Any) -> Any:
    """The Hugging Face causal LM under a peft wrapper, or the model itself."""
    get_base = getattr(model, "get_base_model", None)
    if callable(get_base):
        return get_base()
    return model


def model_type_of(model: Any) -> str:
    config = getattr(unwrap_model(model), "config", None)
    model_type = getattr(config, "model_type", None)
    if not isinstance(model_type, str):
        raise UnsupportedArchitectureError(
            f"{type(model).__name__} has no config.model_type; supported model types: "
            + ", ".join(supported_model_types())
        )
    return model_type


def sites_for_model(model: Any) -> ArchitectureSites:
    return sites_for_model_type(model_type_of(model))


def decoder_layers(model: Any) -> list[Any]:
    """The decoder layers of a (possibly peft-wrapped) causal LM, in order."""
    entry = sites_for_model(model)
    return list(get_submodule(unwrap_model(model), entry.layers_path))


def site_module(model: Any, layer_index: int, site: str) -> Any:
    """The module whose forward output is the given site of the given layer."""
    entry = sites_for_model(model)
    layer = decoder_layers(model)[layer_index]
    path = entry.site_path(site)
    return layer if path is None else get_submodule(layer, path)


def hidden_size_of(model: Any) -> int:
    """Width of the residual stream, read off the input embedding."""
    return int(unwrap_model(model).get_input_embeddings().embedding_dim)
