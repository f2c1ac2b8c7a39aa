"""The ``dpo`` method's config (torch-free): what it trains, and where its reference comes from."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag, model_validator

from steering_core.methods.joint.config import JointMethod
from steering_core.methods.post_block.config import PostBlockMethod
from steering_core.spec.method_config import StrictModel


def _trained_kind(value: Any) -> str:
    """The kind of a ``trains`` block: its ``type``, post_block where it names none."""
    if isinstance(value, dict):
        return str(value.get("type", "post_block"))
    return str(getattr(value, "type", "post_block"))


TrainedMethod = Annotated[
    Annotated[PostBlockMethod, Tag("post_block")] | Annotated[JointMethod, Tag("joint")],
    Discriminator(
        _trained_kind,
        custom_error_type="trains_type",
        custom_error_message="trains.type must be post_block or joint",
    ),
]


class DpoMethod(StrictModel):
    """Direct preference optimisation of a steering adapter (OpenAI's ``method.dpo``).

    ``trains`` is the adapter trained: a ``post_block`` block (the default, with its defaults)
    or a ``joint`` block, exactly as those methods take them. The reference policy of DPO is the
    same model with every trained part switched off (``reference: "adapters_off"``): no second
    copy of the model is held. ``"separate_copy"`` loads one, as two-model DPO trainers do; it
    gives the same log-probabilities at twice the model memory, and is there to compare with.
    """

    type: Literal["dpo"] = "dpo"
    trains: TrainedMethod = Field(
        default_factory=PostBlockMethod,
        description='The adapter trained: a post_block (default) or joint block, e.g. {"type": '
        '"post_block", "site": {"layers": [20, 21]}, "adapter": {"rank": 4}}.',
    )
    reference: Literal["adapters_off", "separate_copy"] = Field(
        default="adapters_off",
        description="adapters_off: the reference log-probabilities come from the same model with "
        "the trained parts switched off (no second model in memory); separate_copy: from a "
        "second copy of the base model (twice the model memory, the same numbers).",
    )

    @model_validator(mode="after")
    def _layers_listed(self) -> DpoMethod:
        # The message starts with the field to change (the API's error names it as the param).
        if self.trains.site.layers == "auto":
            raise ValueError(
                'trains.site.layers "auto" is not available with dpo: its layer score is a '
                "supervised loss's; list the layers, or leave them out to steer every layer"
            )
        return self
