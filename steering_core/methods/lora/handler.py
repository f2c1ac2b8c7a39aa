"""``lora``, torch side: peft LoRA, saved in peft's own format under ``lora/``."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from peft import LoraConfig as PeftLoraConfig
from peft import PeftModel, get_peft_model
from torch import nn

from steering_core.errors import ArtifactError, ConfigValidationError
from steering_core.methods.base import AttachedMethod, MethodHandler
from steering_core.methods.lora import LORA_DIR
from steering_core.methods.lora.config import LoraMethod
from steering_core.model.sites import sites_for_model
from steering_core.spec.method_config import LoraConfig


def lora_targets(model: nn.Module, lora: LoraConfig) -> list[str]:
    return list(lora.target_modules or sites_for_model(model).lora_targets)


def attach_lora(model: nn.Module, lora: LoraConfig) -> PeftModel:
    """Wrap ``model`` with trainable LoRA adapters (the base model is frozen by peft)."""
    targets = lora_targets(model, lora)
    peft_config = PeftLoraConfig(
        r=lora.rank,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(model, peft_config)
    except ValueError as exc:
        raise ConfigValidationError(
            f"lora.target_modules {targets} do not fit this model: {exc}"
        ) from exc


def load_lora(model: nn.Module, artifact_dir: Path) -> PeftModel:
    lora_dir = artifact_dir / LORA_DIR
    if not (lora_dir / "adapter_config.json").is_file():
        raise ArtifactError(f"artifact {artifact_dir} has no peft adapter in {LORA_DIR}/")
    try:
        return PeftModel.from_pretrained(model, str(lora_dir))
    except (ValueError, RuntimeError, OSError, KeyError) as exc:
        raise ArtifactError(f"the LoRA adapter in {lora_dir} does not load: {exc}") from exc


def save_lora(peft_model: PeftModel, out_dir: Path) -> str:
    peft_model.save_pretrained(str(out_dir / LORA_DIR), safe_serialization=True)
    return LORA_DIR


class LoraAttached(AttachedMethod):
    method_type = "lora"

    @contextmanager
    def trained_parts_disabled(self) -> Iterator[None]:
        assert isinstance(self.model, PeftModel)
        with self.model.disable_adapter():
            yield

    def save_payload(self, out_dir: Path) -> list[str]:
        assert isinstance(self.model, PeftModel)
        return [save_lora(self.model, out_dir)]


class LoraHandler(MethodHandler):
    method_type = "lora"

    def attach(self, model: nn.Module, config: LoraMethod) -> LoraAttached:
        return LoraAttached(config, attach_lora(model, config.lora))

    def load(self, model: nn.Module, config: LoraMethod, artifact_dir: Path) -> LoraAttached:
        return LoraAttached(config, load_lora(model, artifact_dir))
