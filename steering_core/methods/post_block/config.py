"""The ``post_block`` method's config (torch-free)."""

from __future__ import annotations

from typing import Literal

from steering_core.config import AdapterConfig, SiteConfig, StrictModel


class PostBlockMethod(StrictModel):
    """Steering adapters at a site of each layer (block_output by default: the paper's method)."""

    type: Literal["post_block"] = "post_block"
    site: SiteConfig = SiteConfig()
    adapter: AdapterConfig = AdapterConfig()
