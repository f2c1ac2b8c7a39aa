"""Write the small synthetic task datasets the project ships (``data/tasks/*.jsonl``).

    python -m steering_core.tasks.build_data --out data/tasks

Every line is ``{"prompt": ..., "completion": ..., "answer": ...}`` (``answer`` an int). Splits
come from fixed seeds and are disjoint: the test split is generated first, then validation
without any test expression, then train without any test or validation expression (ListOps,
compared by expression; arithmetic, compared by question text). Running the command again
writes byte-identical files.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from steering_core.tasks import arithmetic, listops

FIELDS = ("prompt", "completion", "answer")


@dataclass(frozen=True)
class SplitSpec:
    task: str  # "listops" or "arithmetic"
    split: str
    count: int
    seed: int

    @property
    def filename(self) -> str:
        return f"{self.task}_{self.split}.jsonl"


# Generation order matters: earlier splits of a task are excluded from later ones.
SPLITS: tuple[SplitSpec, ...] = (
    SplitSpec("listops", "test", 1000, 1003),
    SplitSpec("listops", "validation", 200, 1002),
    SplitSpec("listops", "train", 1000, 1001),
    SplitSpec("arithmetic", "test", 300, 2003),
    SplitSpec("arithmetic", "train", 1000, 2001),
)


def build_splits(splits: Sequence[SplitSpec] = SPLITS) -> dict[str, list[dict[str, Any]]]:
    """Generate every split, in order, keyed by file name (full generator records)."""
    used: dict[str, set[str]] = {"listops": set(), "arithmetic": set()}
    built: dict[str, list[dict[str, Any]]] = {}
    for spec in splits:
        if spec.task == "listops":
            records = listops.generate_examples(
                spec.count, spec.seed, balance_operators=True, exclude=used["listops"]
            )
            used["listops"].update(r["expression"] for r in records)
        elif spec.task == "arithmetic":
            records = arithmetic.generate_problems(
                spec.count, spec.seed, exclude=used["arithmetic"]
            )
            used["arithmetic"].update(r["question"] for r in records)
        else:
            raise ValueError(f"unknown task {spec.task!r} in split {spec}")
        built[spec.filename] = records
    return built


def write_jsonl(path: Path, records: Sequence[dict[str, Any]]) -> None:
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for record in records:
            row = {field: record[field] for field in FIELDS}
            handle.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m steering_core.tasks.build_data", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--out", type=Path, default=Path("data/tasks"), help="output folder")
    args = parser.parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    total = 0
    for filename, records in build_splits().items():
        path = out / filename
        write_jsonl(path, records)
        size = path.stat().st_size
        total += size
        print(f"{path}: {len(records)} records, {size} bytes")
    print(f"total: {total} bytes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
