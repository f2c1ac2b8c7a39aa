"""The benchmark scripts are not a package: their folder goes on sys.path, as when run."""

import sys
from pathlib import Path

QUALITY = Path(__file__).resolve().parents[2] / "benchmarks" / "quality"
if str(QUALITY) not in sys.path:
    sys.path.insert(0, str(QUALITY))
