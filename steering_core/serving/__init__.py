"""The serving room: one base model, many adapters per forward pass.

- :mod:`.requests`: what generation requests share, whichever engine runs them (prompt encoding,
  sampling settings, stop strings, the result);
- :mod:`.engine`: the batching generation engine; :mod:`.kv` its KV cache, :mod:`.sampling` the
  per-row choice of the next token, :mod:`.row_steering` the per-row adapters;
- :mod:`.forms`: an adapter in the one form the engine applies per row;
- :mod:`.pool`: adapters resident for serving, bounded in bytes;
- :mod:`.served_models`: one engine per base model, the pool and the full-model copies.
"""

from steering_core.serving.engine import BatchEngine, GenerationCancelled, RequestHandle
from steering_core.serving.served_models import ServedModels, ServingStats

__all__ = ["BatchEngine", "GenerationCancelled", "RequestHandle", "ServedModels", "ServingStats"]
