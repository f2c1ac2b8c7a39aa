"""Everything a server generates with: one batching engine per base model, the adapter pool,
and full fine-tuned models as their own copies.

- A base model (``tiny-llama``, ``smollm2-135m-instruct``, ...) is loaded once, with one
  :class:`~steering_core.serving.engine.BatchEngine`. Every ``post_block``, ``joint``, ``reft``
  and ``lora`` adapter of it is served by that engine, per row.
- A ``full`` job's artifact is a whole model: it gets its own copy and engine, at most
  ``full_copies`` of them kept (least recently used out first, once idle).
"""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from steering_core.artifact.store import load_artifact
from steering_core.errors import SteeringUserError
from steering_core.model.loading import load_model, load_tokenizer
from steering_core.serving.engine import BatchEngine
from steering_core.serving.forms import ServingAdapter, read_serving_adapter
from steering_core.serving.pool import AdapterPool, PoolStats

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def resolve_device(device: str, dtype: str) -> tuple[torch.device, torch.dtype]:
    """Where models are served and in what precision. ``auto``: the first GPU when torch sees
    one (in bfloat16), else the CPU (in float32)."""
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    where = torch.device(device)
    if where.type == "cuda" and not torch.cuda.is_available():
        raise SteeringUserError(f"generation device {device!r}: torch sees no GPU here")
    if dtype == "auto":
        dtype = "bfloat16" if where.type == "cuda" else "float32"
    if dtype not in DTYPES:
        raise SteeringUserError(f"generation dtype {dtype!r}: expected auto or {', '.join(DTYPES)}")
    return where, DTYPES[dtype]


@dataclass(frozen=True)
class ServingStats:
    engines: int
    rows_in_flight: int
    pool: PoolStats
    model_hits: int
    model_misses: int
    passes: dict[str, int]  # forwards by phase (prefill, decode), all engines
    rows_run: dict[str, int]  # rows those forwards carried


class ServedModels:
    def __init__(
        self,
        *,
        cache_dir: Path | None = None,
        adapter_pool_bytes: int = 256 * 2**20,
        max_batch: int = 64,
        full_copies: int = 2,
        device: str = "auto",
        dtype: str = "auto",
    ):
        self.cache_dir, self.max_batch, self.full_copies = cache_dir, max_batch, full_copies
        self.device, self.dtype = resolve_device(device, dtype)
        # The engine thread does Python work between torch ops; a shorter switch interval
        # (CPython's default is 5 ms) lets the request handlers' thread in sooner.
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0005))
        self.pool = AdapterPool(adapter_pool_bytes)
        self._bases: dict[str, BatchEngine] = {}
        self._full: OrderedDict[str, BatchEngine] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}  # keys being loaded, one lock each
        self.model_hits = self.model_misses = 0

    def base(self, name: str) -> tuple[BatchEngine, bool]:
        """The engine of a base model, loading it on first use; (engine, was it loaded)."""

        def load() -> BatchEngine:
            model = load_model(name, cache_dir=self.cache_dir, dtype=self.dtype, device=self.device)
            tokenizer = load_tokenizer(name, cache_dir=self.cache_dir)
            return BatchEngine(model, tokenizer, max_batch=self.max_batch, name=name)

        return self._engine(self._bases, name, load)

    def _engine(
        self, table: dict[str, BatchEngine], key: str, load: Callable[[], BatchEngine]
    ) -> tuple[BatchEngine, bool]:
        """``table[key]``, loaded once by ``load`` on a miss, outside the shared lock: a model
        that takes seconds to load holds up only the requests that need it."""
        with self._lock:
            found = self._lookup(table, key)
            if found is not None:
                return found, True
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                found = self._lookup(table, key)
                if found is not None:
                    return found, True
            engine = load()
            with self._lock:
                self.model_misses += 1
                table[key] = engine
                self._loading.pop(key, None)
                if table is self._full:
                    idle = [k for k, e in self._full.items() if k != key and not e.in_flight]
                    while len(self._full) > self.full_copies and idle:
                        self._full.pop(idle.pop(0)).close()
            return engine, False

    def _lookup(self, table: dict[str, BatchEngine], key: str) -> BatchEngine | None:
        found = table.get(key)
        if found is not None:
            self.model_hits += 1
            if isinstance(table, OrderedDict):
                table.move_to_end(key)
        return found

    def adapter(
        self, engine: BatchEngine, sha256: str, artifact_dir: Path, verify: Callable[[], None]
    ) -> tuple[ServingAdapter, bool]:
        """A batched adapter for ``engine``'s model, by content; ``verify`` checks its stored
        files before the first load (a resident adapter was checked when it was loaded)."""

        def load() -> ServingAdapter:
            verify()
            weight = engine.model.get_input_embeddings().weight
            return read_serving_adapter(
                artifact_dir,
                sha256,
                dtype=weight.dtype,
                device=weight.device,
                base_model=engine.model,
            )

        return self.pool.get(sha256, load)

    def full(
        self, base: str, sha256: str, artifact_dir: Path, verify: Callable[[], None]
    ) -> tuple[BatchEngine, bool]:
        """The engine of a full fine-tuned model (its own copy), loading it on first use."""

        def load() -> BatchEngine:
            verify()
            model = load_model(base, cache_dir=self.cache_dir, dtype=self.dtype)
            model = load_artifact(model, artifact_dir).model.to(self.device)
            tokenizer = load_tokenizer(base, cache_dir=self.cache_dir)
            return BatchEngine(model, tokenizer, max_batch=self.max_batch, name=sha256[:12])

        return self._engine(self._full, sha256, load)

    def stats(self) -> ServingStats:
        with self._lock:
            engines = [*self._bases.values(), *self._full.values()]
            hits, misses = self.model_hits, self.model_misses
        phases = ("prefill", "decode")
        return ServingStats(
            len(engines),
            sum(e.in_flight for e in engines),
            self.pool.stats(),
            hits,
            misses,
            {phase: sum(e.passes[phase] for e in engines) for phase in phases},
            {phase: sum(e.rows_run[phase] for e in engines) for phase in phases},
        )

    def close(self) -> None:
        with self._lock:
            engines: list[Any] = [*self._bases.values(), *self._full.values()]
            self._bases.clear()
            self._full.clear()
        for engine in engines:
            engine.close()
