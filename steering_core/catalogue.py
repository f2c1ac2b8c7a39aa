"""What the service must know about models without loading them. Torch- and transformers-free.

The API checks layer indices and ranks against a model's size before it stores a job, and the
API image carries no torch, so the sizes come from here: published sizes for the catalogue's
pretrained models, the fixed size of the tiny test models, or a local directory's config.json.
"""

from __future__ import annotations

import json
from pathlib import Path

from steering_core.errors import UnknownModelError

# (decoder layers, hidden size)
CATALOGUE_DIMENSIONS: dict[str, tuple[int, int]] = {
    "smollm2-135m-instruct": (30, 576),
    "gemma-3-270m": (18, 640),
}

TINY_FAMILIES = (
    "llama",
    "mistral",
    "qwen2",
    "qwen3",
    "gemma",
    "gemma2",
    "gemma3_text",
    "gemma3",
    "gpt2",
    "gpt_neox",
)
TINY_DIMENSIONS = (3, 32)  # every tiny-<family> model (steering_core.models.tiny_config)


def _from_config_json(path: Path) -> tuple[int, int]:
    config = json.loads((path / "config.json").read_text())
    text = config.get("text_config") or config
    layers = text.get("num_hidden_layers", text.get("n_layer"))
    hidden = text.get("hidden_size", text.get("n_embd"))
    if not isinstance(layers, int) or not isinstance(hidden, int):
        raise UnknownModelError(f"{path}/config.json names no layer count and hidden size")
    return layers, hidden


def model_dimensions(name_or_path: str) -> tuple[int, int]:
    """(decoder layers, hidden size) of a catalogue name, tiny model or local HF directory."""
    if name_or_path in CATALOGUE_DIMENSIONS:
        return CATALOGUE_DIMENSIONS[name_or_path]
    if name_or_path.startswith("tiny-"):
        family = name_or_path.removeprefix("tiny-")
        if family not in TINY_FAMILIES:
            raise UnknownModelError(
                f"no tiny model for family {family!r}; available: {', '.join(TINY_FAMILIES)}"
            )
        return TINY_DIMENSIONS
    path = Path(name_or_path)
    if (path / "config.json").is_file():
        return _from_config_json(path)
    raise UnknownModelError(
        f"model {name_or_path!r} is not in the catalogue and is not a local "
        "Hugging Face model directory"
    )
