"""The shipped data files: present, well-formed, disjoint, small and reproducible."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from steering_core.tasks import build_data, listops
from steering_core.tasks.scorers import score_gsm8k, score_listops

DATA = Path(__file__).resolve().parents[3] / "data" / "tasks"
EXPECTED = {
    "listops_train.jsonl": 1000,
    "listops_validation.jsonl": 200,
    "listops_test.jsonl": 1000,
    "arithmetic_train.jsonl": 1000,
    "arithmetic_test.jsonl": 300,
}


def load(name: str) -> list[dict]:
    path = DATA / name
    assert path.is_file(), (
        f"{path} is missing: run `python -m steering_core.tasks.build_data --out data/tasks` "
        "(and make sure data/tasks/ is not git-ignored)"
    )
    with (DATA / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle]


def listops_expression(prompt: str) -> str:
    return prompt.split("Expression:\n", 1)[1].strip()


@pytest.mark.parametrize(("name", "count"), EXPECTED.items())
def test_files_exist_with_counts_and_fields(name: str, count: int) -> None:
    records = load(name)
    assert len(records) == count
    for record in records:
        assert set(record) == {"prompt", "completion", "answer"}
        if name.startswith("listops"):
            assert record["answer"] == listops.evaluate_expression(
                listops_expression(record["prompt"])
            )
            assert score_listops(record["completion"], str(record["answer"]))
        else:
            assert score_gsm8k(record["completion"], str(record["answer"]))


def test_splits_are_disjoint() -> None:
    train = {listops_expression(r["prompt"]) for r in load("listops_train.jsonl")}
    validation = {listops_expression(r["prompt"]) for r in load("listops_validation.jsonl")}
    test = {listops_expression(r["prompt"]) for r in load("listops_test.jsonl")}
    assert len(train) == 1000 and len(validation) == 200 and len(test) == 1000
    assert not train & test and not train & validation and not validation & test
    a_train = {r["prompt"] for r in load("arithmetic_train.jsonl")}
    a_test = {r["prompt"] for r in load("arithmetic_test.jsonl")}
    assert len(a_train) == 1000 and len(a_test) == 300
    assert not a_train & a_test


def test_total_size_is_small() -> None:
    load("listops_test.jsonl")  # clear message when the files are missing
    total = sum((DATA / name).stat().st_size for name in EXPECTED)
    assert total < 2 * 1024 * 1024


def test_files_are_reproducible(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert build_data.main(["--out", str(tmp_path)]) == 0
    assert "total:" in capsys.readouterr().out
    for name in EXPECTED:
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name
