"""What an adapter adds to a forward pass, in the one form the batching engine applies per row.

Every batched adapter is a set of *parts*, each a shift added to one module's output:

- :class:`VectorPart`: ``+ v`` (post-block ``vector`` adapters);
- :class:`LowRankPart`: ``+ up · phi(down · x + bias)``, where ``x`` is the module's output
  (steering sites: ``linear`` and ``nonlinear`` post-block adapters, the steering half of
  ``joint``, LoReFT) or its input (LoRA on a projection: ``down = A``, ``up = B · alpha / r``).

LoReFT's ``R^T (W h + b - R h)`` is ``up = R^T``, ``down = W - R``, ``bias = b`` with phi the
identity; its ``positions`` limit it to the first and last prompt tokens, never generated ones.
A part is keyed by where it applies (:class:`HookKey`), so the engine hooks each module once and
adds every row's parts there. Reading a part needs only the artifact's files, never a model copy.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from steering_core.artifact.schema import ArtifactConfig
from steering_core.artifact.store import check_base_model, read_artifact_config
from steering_core.errors import ArtifactError
from steering_core.methods.registry import method_definition
from steering_core.methods.steering_tensors import STEERING_FILE, read_steering_file
from steering_core.steering.adapter_modules import LoReFTIntervention

LORA_DIR = "lora"
LORA_PREFIX = "base_model.model."


@dataclass(frozen=True)
class HookKey:
    """Where a part applies: a steering site of a layer (its output is the part's input), or a
    module by its path in the model (its input is the part's input, its output gets the shift)."""

    site: str | None = None
    layer: int | None = None
    module: str | None = None

    @property
    def reads_input(self) -> bool:
        return self.module is not None


@dataclass(frozen=True)
class VectorPart:
    vector: torch.Tensor  # [H]

    @property
    def nbytes(self) -> int:
        return self.vector.nbytes

    def to(self, device: torch.device | str) -> VectorPart:
        return VectorPart(self.vector.to(device))


@dataclass(frozen=True)
class LowRankPart:
    """Kept as the engine multiplies: ``x @ down_t`` then ``@ up_t`` (contiguous, one copy)."""

    down_t: torch.Tensor  # [in, r]
    up_t: torch.Tensor  # [r, out]
    bias: torch.Tensor | None = None  # [r]
    activation: str | None = None  # None: identity
    positions: tuple[int, int] | None = None  # (first, last) prompt tokens; None: every token

    @classmethod
    def of(
        cls, down: torch.Tensor, up: torch.Tensor, dtype: torch.dtype, **kwargs: object
    ) -> LowRankPart:
        """From ``down [r, in]`` and ``up [out, r]`` as modules store them."""
        return cls(
            down.T.contiguous().to(dtype),
            up.T.contiguous().to(dtype),
            **kwargs,  # type: ignore[arg-type]
        )

    @property
    def rank(self) -> int:
        return int(self.down_t.shape[1])

    def to(self, device: torch.device | str) -> LowRankPart:
        return dataclasses.replace(
            self,
            down_t=self.down_t.to(device),
            up_t=self.up_t.to(device),
            bias=None if self.bias is None else self.bias.to(device),
        )

    @property
    def nbytes(self) -> int:
        extra = self.bias.nbytes if self.bias is not None else 0
        return self.down_t.nbytes + self.up_t.nbytes + extra


Part = VectorPart | LowRankPart


@dataclass
class ServingAdapter:
    """An adapter ready for batched serving: its parts by where they apply."""

    sha256: str
    method: str
    base_model: str
    parts: dict[HookKey, list[Part]] = field(default_factory=dict)

    @property
    def nbytes(self) -> int:
        return sum(part.nbytes for parts in self.parts.values() for part in parts)

    def add(self, key: HookKey, part: Part) -> None:
        self.parts.setdefault(key, []).append(part)

    def only(self, mode: str) -> ServingAdapter:
        """A joint adapter's inference mode: ``all`` as trained, ``lora_only`` without its
        steering parts, ``adapter_only`` without its LoRA parts (a view; tensors are shared)."""
        if mode == "all":
            return self
        if mode not in ("lora_only", "adapter_only"):
            raise ValueError(f"inference mode {mode!r} unknown; use all, lora_only or adapter_only")
        keep_lora = mode == "lora_only"
        parts = {key: p for key, p in self.parts.items() if key.reads_input == keep_lora}
        return dataclasses.replace(self, parts=parts)

    def to(self, device: torch.device | str) -> ServingAdapter:
        """The same adapter with every tensor on ``device`` (once, when it enters the pool)."""
        parts = {key: [part.to(device) for part in parts] for key, parts in self.parts.items()}
        return dataclasses.replace(self, parts=parts)


def read_serving_adapter(
    artifact_dir: Path,
    sha256: str,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    base_model: nn.Module | None = None,
) -> ServingAdapter:
    """The parts of an artifact of steering tensors and/or a LoRA (``post_block``, ``joint``,
    ``reft``, ``lora``). ArtifactError for a method that trains the base weights (its artifact
    is a whole model), for files that do not match the config, and, when ``base_model`` is
    given, for a base model of another shape than the one the adapter was trained on."""
    config = read_artifact_config(artifact_dir)
    method = config.method.type
    if method_definition(method).trains_base_weights:
        raise ArtifactError(
            f"a {method!r} adapter is a whole model: it is not served from a shared base model"
        )
    if base_model is not None:
        check_base_model(config, base_model, check_hash=False)
    adapter = ServingAdapter(sha256, method, config.base_model.id)
    if (Path(artifact_dir) / STEERING_FILE).is_file():
        _add_steering(adapter, config, Path(artifact_dir), dtype)
    if (Path(artifact_dir) / LORA_DIR).is_dir():
        _add_lora(adapter, Path(artifact_dir) / LORA_DIR, dtype)
    if not adapter.parts:
        raise ArtifactError(f"the {method!r} artifact in {artifact_dir} holds no adapter tensors")
    return adapter if torch.device(device).type == "cpu" else adapter.to(device)


def _add_steering(
    adapter: ServingAdapter, config: ArtifactConfig, directory: Path, dtype: torch.dtype
) -> None:
    if config.site is None:
        raise ArtifactError(f"{STEERING_FILE} is present but the config names no site")
    by_layer: dict[int, dict[str, torch.Tensor]] = {}
    for key, tensor in read_steering_file(directory).items():
        parts = key.split(".", 2)
        if len(parts) != 3 or parts[0] != "layers" or not parts[1].isdigit():
            raise ArtifactError(f"unexpected tensor {key!r} in {STEERING_FILE}")
        by_layer.setdefault(int(parts[1]), {})[parts[2]] = tensor
    if sorted(by_layer) != sorted(config.layers):
        raise ArtifactError(
            f"{STEERING_FILE} holds layers {sorted(by_layer)} but the config names {config.layers}"
        )
    positions = getattr(config.method, "first_last", None)
    activation = config.activation if config.adapter_kind == "nonlinear" else None
    for layer, tensors in sorted(by_layer.items()):
        key = HookKey(site=config.site, layer=layer)
        if "vector" in tensors:
            adapter.add(key, VectorPart(tensors["vector"].to(dtype)))
        elif "down.weight" in tensors and "up.weight" in tensors:
            part = LowRankPart.of(
                tensors["down.weight"], tensors["up.weight"], dtype, activation=activation
            )
            adapter.add(key, part)
        elif "rotation_raw" in tensors:
            adapter.add(key, _loreft_part(tensors, positions, dtype))
        else:
            raise ArtifactError(f"layer {layer} of {STEERING_FILE} holds {sorted(tensors)}")


def _loreft_part(
    tensors: dict[str, torch.Tensor], positions: tuple[int, int] | None, dtype: torch.dtype
) -> LowRankPart:
    raw = tensors["rotation_raw"]
    rank, hidden = raw.shape
    module = LoReFTIntervention(hidden, rank, dtype=raw.dtype, device=torch.device("cpu"))
    module.import_state(tensors)
    with torch.no_grad():
        rotation = module.rotation()  # R as training computes it
        down = module.source.weight - rotation
    return LowRankPart.of(
        down, rotation.T, dtype, bias=module.source.bias.detach().to(dtype), positions=positions
    )


def _add_lora(adapter: ServingAdapter, lora_dir: Path, dtype: torch.dtype) -> None:
    try:
        settings = json.loads((lora_dir / "adapter_config.json").read_text())
        tensors = load_file(str(lora_dir / "adapter_model.safetensors"))
    except (OSError, ValueError) as exc:
        raise ArtifactError(f"the LoRA adapter in {lora_dir} does not read: {exc}") from exc
    if settings.get("use_dora"):
        raise ArtifactError("a DoRA adapter is not a low-rank shift: it is not batched")
    rank, alpha = int(settings["r"]), float(settings["lora_alpha"])
    rank_pattern, alpha_pattern = settings.get("rank_pattern") or {}, settings.get("alpha_pattern")
    if rank_pattern or alpha_pattern:
        raise ArtifactError("per-module LoRA ranks or alphas are not batched")
    scaling = alpha / math.sqrt(rank) if settings.get("use_rslora") else alpha / rank
    modules: dict[str, dict[str, torch.Tensor]] = {}
    for name, tensor in tensors.items():
        for half in ("lora_A", "lora_B"):
            suffix = f".{half}.weight"
            if name.endswith(suffix):
                path = name.removeprefix(LORA_PREFIX).removesuffix(suffix)
                modules.setdefault(path, {})[half] = tensor
                break
        else:
            raise ArtifactError(f"unexpected tensor {name!r} in the LoRA adapter")
    for path, pair in sorted(modules.items()):
        if set(pair) != {"lora_A", "lora_B"}:
            raise ArtifactError(f"the LoRA adapter has half a pair at {path!r}")
        adapter.add(
            HookKey(module=path),
            LowRankPart.of(pair["lora_A"], pair["lora_B"] * scaling, dtype),
        )
