"""The quality study's own arithmetic splits: 1,000 train / 200 validation / 1,000 test.

    python benchmarks/quality/make_data.py

The shipped ``data/tasks/arithmetic_*`` splits (1,000 / - / 300) are the product's demo data;
the study needs a validation split to choose learning rates on and a test split of 1,000 items
to tell methods apart, so it makes its own with the same generator
(``steering_core.tasks.build_data``: test first, then validation without any test question,
then train without either; fixed seeds, byte-identical on every run).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from steering_core.tasks.build_data import SplitSpec, build_splits, write_jsonl  # noqa: E402

DATA = HERE / "data"
ARITHMETIC_SPLITS = (
    SplitSpec("arithmetic", "test", 1000, 2103),
    SplitSpec("arithmetic", "validation", 200, 2102),
    SplitSpec("arithmetic", "train", 1000, 2101),
)


def main() -> int:
    DATA.mkdir(exist_ok=True)
    for filename, records in build_splits(ARITHMETIC_SPLITS).items():
        write_jsonl(DATA / filename, records)
        print(f"{DATA / filename}: {len(records)} records")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
