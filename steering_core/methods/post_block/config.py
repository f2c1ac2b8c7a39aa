"""The ``post_block`` method's config (torch-free)."""

from __future__ import annotations

from typing import Literal

from steering_core.spec.layer_budget import SelectableSiteConfig
from steering_core.spec.method_config import AdapterConfig, StrictModel


class PostBlockMethod(StrictModel):
    """Steering adapters at a site of each layer (block_output by default: the paper's method);
    ``site.layers: "auto"`` lets the engine choose the layers
    (``steering_core.spec.layer_budget``)."""

    type: Literal["post_block"] = "post_block"
    site: SelectableSiteConfig = SelectableSiteConfig()
    adapter: AdapterConfig = AdapterConfig()
