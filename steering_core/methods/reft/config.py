"""The ``reft`` baseline's config (torch-free)."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from steering_core.spec.method_config import MAX_RANK, DTypeName, SiteConfig, StrictModel

# pyreft's position syntax: "f7+l7" (the first 7 and last 7 prompt tokens), "f1", "l5"; or
# "all": every position of every forward pass, generated tokens included.
POSITIONS = re.compile(r"^(?:f(\d+))?(?:\+?l(\d+))?$")
MAX_POSITIONS = 4096


def parse_positions(positions: str) -> tuple[int, int] | None:
    """``"f7+l7"`` -> (7, 7) (first and last prompt tokens); ``"all"`` -> None."""
    if positions == "all":
        return None
    match = POSITIONS.match(positions)
    if match is None or not any(match.groups()):
        raise ValueError(
            f"positions {positions!r} is not 'all' or pyreft's form 'f<n>+l<n>' "
            "(for example 'f7+l7', 'f1', 'l5')"
        )
    first, last = (int(group) if group else 0 for group in match.groups())
    if first + last == 0 or max(first, last) > MAX_POSITIONS:
        raise ValueError(f"positions {positions!r}: use 1..{MAX_POSITIONS} first or last tokens")
    return first, last


class ReftMethod(StrictModel):
    """Baseline: LoReFT ``h + R^T (W h + b - R h)`` with orthonormal rows of R.

    As the ReFT paper and pyreft run it (the defaults): on the residual stream (block output),
    at the first and last ``p`` prompt tokens only, never on generated tokens; p = 7 is the
    paper's setting for arithmetic and commonsense reasoning (``-p f7+l7``), one intervention
    shared by both ends. ``positions="all"`` with ``site.name="mlp_output"`` is the all-token
    post-MLP reading of ReFT, a separate variant.
    """

    type: Literal["reft"] = "reft"
    site: SiteConfig = SiteConfig()
    rank: int = Field(default=8, ge=1, le=MAX_RANK)
    positions: str = Field(
        default="f7+l7",
        description="'f<n>+l<n>': the first and last n prompt tokens (pyreft's syntax; 'f7+l7' "
        "as the ReFT paper); 'all': every token, generated ones included.",
    )
    init: Literal["random", "identity"] = Field(
        default="random",
        description="'random' as pyreft (W random); 'identity': W = R, b = 0 (no-op at step 0).",
    )
    dtype: DTypeName = "auto"

    @field_validator("positions")
    @classmethod
    def _positions_parse(cls, positions: str) -> str:
        parse_positions(positions)
        return positions

    @property
    def first_last(self) -> tuple[int, int] | None:
        """(first, last) prompt tokens intervened on; None: every position."""
        return parse_positions(self.positions)
