"""Batched serving: one base model, many adapters per forward pass (see ``engine``)."""

from steering_core.serving.engine import BatchEngine, GenerationCancelled, RequestHandle
from steering_core.serving.served_models import ServedModels, ServingStats

__all__ = ["BatchEngine", "GenerationCancelled", "RequestHandle", "ServedModels", "ServingStats"]
