"""One rank of a memory run: ``python -m steering_core.cli`` plus a count of the tensors it holds.

    rank_probe.py [steering_core.cli arguments]     (env DISTRIBUTED_BENCH_CENSUS_DIR=DIR)

RSS tells what a rank's process takes from the machine, but an allocator keeps memory it has
freed (glibc does not hand a freed small block back while a later one sits above it), so the
full model that every rank loads before ZeRO-3 partitions it can stay in RSS after it is freed.
This probe counts what each rank really holds: just before its optimizer's second update (Adam
moments made by the first, this step's gradients in place) it walks every live tensor (with
their ``.grad`` and DeepSpeed's ``ds_tensor`` partitions), adds up the distinct storages, and
writes ``DIR/census-rank-R.json``. The optimizer is the torch AdamW the engine builds; under
ZeRO 1-3 DeepSpeed hands it this rank's flat partition, so its parameters, gradients and state
are this rank's share. Besides the bytes of those storages it counts the part of them that is
in RAM (``mincore``): DeepSpeed allocates buffers it never fills (ZeRO-3's 500M-element reduce
bucket), which take address space, not memory.

With ``DISTRIBUTED_BENCH_ZERO_OVERRIDES`` (JSON) the probe also merges those keys into the
engine's ``zero_optimization`` block; the benchmark uses it for one labelled experiment (bucket
sizes scaled to the model). Everything else the engine does is unchanged.
"""

from __future__ import annotations

import gc
import json
import os
import sys
import warnings
from pathlib import Path
from typing import Any

CENSUS_ENV = "DISTRIBUTED_BENCH_CENSUS_DIR"
ZERO_OVERRIDES_ENV = "DISTRIBUTED_BENCH_ZERO_OVERRIDES"  # JSON merged into zero_optimization
CENSUS_AT_UPDATE = 2  # the second optimizer update: moments exist, gradients in place


PAGE = os.sysconf("SC_PAGE_SIZE")


def resident_pages(ptr: int, nbytes: int) -> set[int]:
    """The pages of ``[ptr, ptr + nbytes)`` that are in RAM (``mincore``): a buffer allocated
    with ``torch.empty`` and never written takes address space, not memory."""
    import ctypes

    start = ptr - ptr % PAGE
    count = (ptr + nbytes - start + PAGE - 1) // PAGE
    vector = (ctypes.c_ubyte * count)()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p]
    if libc.mincore(ctypes.c_void_p(start), ctypes.c_size_t(count * PAGE), vector) != 0:
        return set(range(start, start + count * PAGE, PAGE))  # unknown: count it all
    return {start + i * PAGE for i in range(count) if vector[i] & 1}


class Storages:
    """Distinct storages (by address) of the tensors added, with one tensor that uses each."""

    def __init__(self) -> None:
        self.sizes: dict[int, int] = {}
        self.example: dict[int, Any] = {}

    def add(self, tensor: Any) -> None:
        import torch

        if not isinstance(tensor, torch.Tensor) or tensor.is_meta or tensor.device.type != "cpu":
            return
        storage = tensor.untyped_storage()
        ptr, nbytes = storage.data_ptr(), storage.nbytes()
        if ptr and nbytes and nbytes >= self.sizes.get(ptr, 0):
            self.sizes[ptr], self.example[ptr] = nbytes, tensor

    def bytes(self) -> int:
        return sum(self.sizes.values())

    def resident_bytes(self) -> int:
        pages: set[int] = set()
        for ptr, nbytes in self.sizes.items():
            pages |= resident_pages(ptr, nbytes)
        return len(pages) * PAGE

    def largest(self, names: dict[int, str], n: int = 6) -> list[dict[str, Any]]:
        found = []
        for ptr in sorted(self.sizes, key=self.sizes.get, reverse=True)[:n]:  # type: ignore[arg-type]
            example = self.example[ptr]
            found.append(
                {
                    "mib": round(self.sizes[ptr] / 2**20, 1),
                    "resident_mib": round(
                        len(resident_pages(ptr, self.sizes[ptr])) * PAGE / 2**20, 1
                    ),
                    "dtype": str(example.dtype).removeprefix("torch."),
                    "shape": list(example.shape),
                    "held_by": names.get(ptr, "?"),
                }
            )
        return found


def storage_bytes(tensors: Any) -> int:
    """Bytes of the distinct storages behind ``tensors`` (views of one buffer count once)."""
    storages = Storages()
    for tensor in tensors:
        storages.add(tensor)
    return storages.bytes()


def holders(optimizer: Any) -> dict[int, str]:
    """Storage address -> what holds it: the AdamW's state and parameters, and the attributes
    (tensors, or lists and dicts of them) of DeepSpeed's ZeRO optimizer, found by its class."""
    import torch

    names: dict[int, str] = {}

    def note(tensor: Any, name: str) -> None:
        if isinstance(tensor, torch.Tensor) and tensor.untyped_storage().data_ptr():
            names.setdefault(tensor.untyped_storage().data_ptr(), name)

    for param in (p for g in optimizer.param_groups for p in g["params"]):
        note(param, "AdamW parameter")
        note(param.grad, "AdamW parameter .grad")
    for state in optimizer.state.values():
        for key, value in state.items():
            note(value, f"AdamW state {key}")

    def walk(value: Any, name: str, depth: int) -> None:
        if isinstance(value, torch.Tensor):
            note(value, name)
        elif depth == 0:
            return
        elif isinstance(value, (list, tuple)):
            for item in value:
                walk(item, name, depth - 1)
        elif isinstance(value, dict):
            for key, item in value.items():
                walk(item, f"{name}[{key}]" if not isinstance(key, int) else name, depth - 1)
        elif type(value).__module__.startswith("deepspeed") and hasattr(value, "__dict__"):
            for attr, item in vars(value).items():
                walk(item, f"{name}.{attr}", depth - 1)

    for obj in gc.get_objects():
        try:
            zero = type(obj).__name__.startswith("DeepSpeedZeroOptimizer")
        except Exception:
            continue
        if zero:
            for attr, value in vars(obj).items():
                walk(value, f"{type(obj).__name__}.{attr}", 3)
    return names


def census(optimizer: Any) -> dict[str, Any]:
    import torch

    live, parameters, partitions = Storages(), Storages(), Storages()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # .grad of a non-leaf tensor warns
        for obj in gc.get_objects():
            try:
                if not isinstance(obj, torch.Tensor):
                    continue
            except Exception:  # a proxy whose referent is gone
                continue
            live.add(obj)
            live.add(obj.grad)
            partition = getattr(obj, "ds_tensor", None)
            live.add(partition)
            partitions.add(partition)
            if isinstance(obj, torch.nn.Parameter):
                parameters.add(obj)
    own = [p for group in optimizer.param_groups for p in group["params"]]
    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    return {
        "at": f"before optimizer update {CENSUS_AT_UPDATE}",
        "live_tensor_bytes": live.bytes(),
        "live_tensor_resident_bytes": live.resident_bytes(),
        "largest_storages": live.largest(holders(optimizer)),
        "module_parameter_bytes": parameters.bytes(),
        "zero3_partition_bytes": partitions.bytes(),
        "optimizer_parameter_elements": sum(p.numel() for p in own),
        "optimizer_parameter_bytes": storage_bytes(own),
        "optimizer_gradient_bytes": storage_bytes(p.grad for p in own if p.grad is not None),
        "optimizer_state_bytes": storage_bytes(state),
    }


def install(directory: Path) -> None:
    import torch

    updates = {"n": 0}

    def before_step(optimizer: Any, _args: Any, _kwargs: Any) -> None:
        if not isinstance(optimizer, torch.optim.AdamW):
            return
        updates["n"] += 1
        if updates["n"] == CENSUS_AT_UPDATE:
            rank = int(os.environ.get("RANK", "0"))
            path = directory / f"census-rank-{rank}.json"
            path.write_text(json.dumps(census(optimizer), indent=1))

    from torch.optim.optimizer import register_optimizer_step_pre_hook

    register_optimizer_step_pre_hook(before_step)


def override_zero(overrides: dict[str, Any]) -> None:
    """Merge ``overrides`` into the ``zero_optimization`` block of the config the engine hands
    ``deepspeed.initialize`` (an experiment beside the engine's own settings, never instead)."""
    import deepspeed

    initialize = deepspeed.initialize

    def initialize_with(*args: Any, config: dict[str, Any], **kwargs: Any) -> Any:
        zero = {**config["zero_optimization"], **overrides}
        return initialize(*args, config={**config, "zero_optimization": zero}, **kwargs)

    deepspeed.initialize = initialize_with


def main() -> int:
    directory = os.environ.get(CENSUS_ENV)
    if directory:
        Path(directory).mkdir(parents=True, exist_ok=True)
        install(Path(directory))
    if os.environ.get(ZERO_OVERRIDES_ENV):
        override_zero(json.loads(os.environ[ZERO_OVERRIDES_ENV]))
    from steering_core.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
