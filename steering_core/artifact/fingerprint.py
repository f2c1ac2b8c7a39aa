"""Identity of a base model: architecture, sizes, dtype and a hash of its weights."""

from __future__ import annotations

import hashlib

import torch
from torch import nn

from steering_core.artifact.schema import BaseModelInfo
from steering_core.model.sites import decoder_layers, hidden_size_of, model_type_of, unwrap_model
from steering_core.steering.site_steering import STEERING_ATTRIBUTE, model_dtype

_HASH_ATTRIBUTE = "_steering_content_hash"


def _canonical_name(name: str) -> str:
    return name.replace(".base_layer", "")


def model_content_hash(model: nn.Module) -> str | None:
    """sha256 over the base model's tensors (names, shapes, dtypes, bytes), adapters excluded.

    peft's ``base_layer`` renaming is undone so that a wrapped and a plain model hash equal.
    Cached on the model; None for models on the meta device.
    """
    base = unwrap_model(model)
    cached = getattr(base, _HASH_ATTRIBUTE, None)
    if cached is not None:
        return cached
    digest = hashlib.sha256()
    for name, tensor in base.state_dict().items():
        if name.startswith(f"{STEERING_ATTRIBUTE}.") or "lora_" in name:
            continue
        if tensor.is_meta:
            return None
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        digest.update(f"{_canonical_name(name)}|{tuple(tensor.shape)}|{tensor.dtype}\n".encode())
        digest.update(flat.view(torch.uint8).numpy().tobytes())
    value = digest.hexdigest()
    base.__dict__[_HASH_ATTRIBUTE] = value
    return value


def base_model_info(model: nn.Module, model_id: str | None = None) -> BaseModelInfo:
    base = unwrap_model(model)
    return BaseModelInfo(
        id=model_id or str(getattr(base.config, "_name_or_path", "") or base.config.model_type),
        content_hash=model_content_hash(base),
        architecture=model_type_of(base),
        hidden_size=hidden_size_of(base),
        num_layers=len(decoder_layers(base)),
        dtype=str(model_dtype(base)).removeprefix("torch."),
    )
