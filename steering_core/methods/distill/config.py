"""The ``distill`` method's config (torch-free): the source to distil and what the student is."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from steering_core.methods.post_block.config import PostBlockMethod
from steering_core.spec.method_config import StrictModel


class DistillWeights(StrictModel):
    """The loss's two terms (``steering_core.methods.distill.handler`` states them)."""

    hidden: float = Field(
        default=1.0, ge=0.0, le=1000.0, description="the per-layer block outputs' term"
    )
    kl: float = Field(default=1.0, ge=0.0, le=1000.0, description="the next-token KL term")

    @model_validator(mode="after")
    def _not_both_zero(self) -> DistillWeights:
        if self.hidden == 0.0 and self.kl == 0.0:
            raise ValueError("hidden and kl are both 0: the loss would be 0; give one a weight")
        return self


class DistillMethod(StrictModel):
    """A post-block adapter trained to reproduce a source model (the base model with a trained
    adapter: LoRA, full fine-tuning, or any other) on the training file's texts, whose labels
    are not used: the targets are the source's block outputs and next-token distributions."""

    type: Literal["distill"] = "distill"
    source: str = Field(
        min_length=1,
        max_length=256,
        description="The adapter to distil: its id, name@version, or a fine-tuning job's id "
        "(its trained adapter); trained on the same base model. The service stores the "
        "adapter's id.",
    )
    trains: PostBlockMethod = Field(
        default_factory=PostBlockMethod,
        description="The student: a post_block block (layers, adapter kind and rank).",
    )
    weights: DistillWeights = DistillWeights()
    temperature: float = Field(
        default=1.0, gt=0.0, le=100.0, description="of both distributions in the KL term"
    )

    @model_validator(mode="after")
    def _layers_listed(self) -> DistillMethod:
        # The message starts with the field to change (the API's error names it as the param).
        if self.trains.site.layers == "auto":
            raise ValueError(
                'trains.site.layers "auto" is not available with distill: list the layers, or '
                "leave them out to steer every layer"
            )
        return self
