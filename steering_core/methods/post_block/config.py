"""The ``post_block`` method's config (torch-free)."""

from __future__ import annotations

from typing import Literal

from steering_core.config import AdapterConfig, StrictModel
from steering_core.layer_budget import SelectableSiteConfig


class PostBlockMethod(StrictModel):
    """Steering adapters at a site of each layer (block_output by default: the paper's method);
    ``site.layers: "auto"`` lets the engine choose the layers (``steering_core.layer_budget``)."""

    type: Literal["post_block"] = "post_block"
    site: SelectableSiteConfig = SelectableSiteConfig()
    adapter: AdapterConfig = AdapterConfig()
