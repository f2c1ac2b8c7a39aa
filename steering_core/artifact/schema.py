"""``steering_config.json``: the description saved beside an adapter's tensors. Torch-free."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from steering_core.methods.registry import MethodConfig
from steering_core.spec.method_config import StrictModel

FORMAT_VERSION = 1
CONFIG_FILE = "steering_config.json"


class BaseModelInfo(StrictModel):
    """The base model an artifact was trained on; loading checks the model against it."""

    id: str
    content_hash: str | None = Field(
        default=None, description="sha256 over the base weights (names, shapes, dtypes, bytes)."
    )
    architecture: str
    hidden_size: int
    num_layers: int
    dtype: str


class ParameterCount(StrictModel):
    trainable: int
    base_total: int
    percent: float = Field(description="trainable / base_total * 100")


class ArtifactConfig(StrictModel):
    format_version: Literal[1] = FORMAT_VERSION
    method: MethodConfig  # type: ignore[valid-type]
    site: str | None
    layers: list[int]
    adapter_kind: str | None
    rank: int | None
    activation: str | None
    base_model: BaseModelInfo
    dtype: str
    parameters: ParameterCount
    files: list[str]
    library_versions: dict[str, str]
    training_manifest: dict[str, Any] | None = None

    @model_validator(mode="before")
    @classmethod
    def _reft_before_positions(cls, data: Any) -> Any:
        """A ReFT adapter saved before intervention positions existed (its method has none)
        steered every token: it loads as the all-token variant (``positions="all"``)."""
        method = data.get("method") if isinstance(data, dict) else None
        if isinstance(method, dict) and method.get("type") == "reft" and "positions" not in method:
            return {**data, "method": {**method, "positions": "all"}}
        return data
