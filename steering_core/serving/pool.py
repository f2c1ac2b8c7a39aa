"""Adapters resident for serving, by content: a byte-bounded pool, least recently used out first.

Keys are the adapter's sha256 (its files' digest as the registry records it), so an adapter
retrained under the same name is a new entry and never serves stale weights. The pool holds the
adapters' parts (a post-block r=8 adapter on SmolLM2 is about 1.1 MB); rows in flight keep their
own references, so an evicted adapter finishes the requests already using it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

from steering_core.serving.forms import ServingAdapter


@dataclass(frozen=True)
class PoolStats:
    adapters: int
    bytes: int
    max_bytes: int
    hits: int
    misses: int
    evictions: int


class AdapterPool:
    def __init__(self, max_bytes: int):
        if max_bytes < 1:
            raise ValueError("the adapter pool needs room for at least one byte")
        self.max_bytes = max_bytes
        self._entries: OrderedDict[str, ServingAdapter] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self._loading: dict[str, threading.Lock] = {}
        self.hits = self.misses = self.evictions = 0

    def get(self, sha256: str, load: Callable[[], ServingAdapter]) -> tuple[ServingAdapter, bool]:
        """The resident adapter with this digest, loaded by ``load`` on a miss; (it, was it a
        hit). Two requests missing the same adapter load it once."""
        with self._lock:
            found = self._touch(sha256)
            if found is not None:
                self.hits += 1
                return found, True
            loading = self._loading.setdefault(sha256, threading.Lock())
        with loading:
            with self._lock:
                found = self._touch(sha256)
                if found is not None:
                    self.hits += 1
                    return found, True
            adapter = load()  # outside the pool's lock: other adapters stay available
            with self._lock:
                self.misses += 1
                self._entries[sha256] = adapter
                self._bytes += adapter.nbytes
                self._loading.pop(sha256, None)
                while self._bytes > self.max_bytes and len(self._entries) > 1:
                    _, evicted = self._entries.popitem(last=False)
                    self._bytes -= evicted.nbytes
                    self.evictions += 1
            return adapter, False

    def _touch(self, sha256: str) -> ServingAdapter | None:
        found = self._entries.get(sha256)
        if found is not None:
            self._entries.move_to_end(sha256)
        return found

    def __contains__(self, sha256: str) -> bool:
        with self._lock:
            return sha256 in self._entries

    def stats(self) -> PoolStats:
        with self._lock:
            return PoolStats(
                len(self._entries),
                self._bytes,
                self.max_bytes,
                self.hits,
                self.misses,
                self.evictions,
            )
