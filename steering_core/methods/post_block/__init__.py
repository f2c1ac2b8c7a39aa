"""``post_block``: a steering adapter ``h <- h + f(h)`` at a site of each layer; at
``block_output`` it is the paper's method, at ``attn_output`` / ``mlp_output`` its site ablation.
"""

from __future__ import annotations

from steering_core.methods.definition import (
    MethodDefaults,
    MethodDefinition,
    steering_adapter_summary,
)
from steering_core.methods.post_block.config import PostBlockMethod

# METHOD.md section 3: steering lr 9e-4, linear decay, 3% warmup.
METHOD = MethodDefinition(
    name="post_block",
    config=PostBlockMethod,
    defaults=MethodDefaults(learning_rate=9e-4, lr_scheduler="linear", warmup_ratio=0.03),
    description="Low-rank steering adapter on each transformer block's output (the residual "
    "stream after both residual adds); other sites for the ablation.",
    handler="steering_core.methods.post_block.handler:PostBlockHandler",
    rank_fields=("adapter.rank",),
    site_field="site",
    summary=steering_adapter_summary,
)

__all__ = ["METHOD", "PostBlockMethod"]
