"""The quality study's arithmetic splits are what make_data.py writes, and disjoint."""

from __future__ import annotations

import json
from pathlib import Path

from make_data import ARITHMETIC_SPLITS, DATA, main


def test_committed_splits_are_what_the_builder_writes(tmp_path: Path, monkeypatch) -> None:
    import make_data

    monkeypatch.setattr(make_data, "DATA", tmp_path)
    assert main() == 0
    for spec in ARITHMETIC_SPLITS:
        assert (tmp_path / spec.filename).read_bytes() == (DATA / spec.filename).read_bytes()


def test_splits_are_disjoint_and_sized() -> None:
    questions = {}
    for spec in ARITHMETIC_SPLITS:
        rows = [json.loads(x) for x in (DATA / spec.filename).read_text().splitlines()]
        assert len(rows) == spec.count
        questions[spec.split] = {r["prompt"] for r in rows}
        assert len(questions[spec.split]) == spec.count
    assert not questions["test"] & questions["validation"]
    assert not questions["test"] & questions["train"]
    assert not questions["validation"] & questions["train"]
