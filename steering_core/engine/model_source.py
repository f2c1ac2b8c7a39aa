"""Where a run's models come from: its base model, and the frozen copies of it some
objectives compare against (dpo's reference, distill's source adapter).

``load_model`` is the one ``train()`` passes in (its own module's, which a test may replace).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

from steering_core.artifact.store import load_artifact
from steering_core.errors import SteeringUserError
from steering_core.spec.training_spec import TrainingSpec

LoadModel = Callable[..., torch.nn.Module]  # steering_core.model.loading.load_model's shape


@dataclass(frozen=True)
class ModelSource:
    """The spec's base model, and frozen copies of it (bare, or with the spec's
    ``source_artifact``), each loaded afresh by ``load_model``."""

    spec: TrainingSpec
    cache_dir: Path | None
    load_model: LoadModel

    def load(self) -> torch.nn.Module:
        """The base model, fp32."""
        return self.load_model(self.spec.model, cache_dir=self.cache_dir, dtype=torch.float32)

    def frozen_base(self, device: torch.device) -> torch.nn.Module:
        """A second, frozen copy of the base model on ``device`` (dpo's ``separate_copy``)."""
        return _frozen_on(self.load(), device)

    def frozen_source(self, device: torch.device) -> torch.nn.Module:
        """The spec's ``source_artifact`` on a copy of its base model, frozen, in eval mode."""
        source = self.spec.source_artifact
        if source is None or not Path(source).is_dir():
            raise SteeringUserError(
                f"the source adapter's files are not at {source}: was the adapter "
                "deleted after the job was created?"
            )
        return _frozen_on(load_artifact(self.load(), source).model, device)


def _frozen_on(model: torch.nn.Module, device: torch.device) -> torch.nn.Module:
    """``model`` frozen, in eval mode, on ``device`` (moved after its adapter is attached)."""
    model.requires_grad_(False)
    return model.to(device).eval()
