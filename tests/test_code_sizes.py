"""The size rules of the packages: no module over 400 lines, no function over 60 (a data table
excepted: a module saying ``# size rule: data table`` on a line of its own)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("steering_core", "api", "worker", "registry", "steer")
MODULE_LINES, FUNCTION_LINES = 400, 60
EXEMPT = "# size rule: data table"


def measured_sizes(root: Path = ROOT) -> dict[str, int]:
    """Every module and function over its limit, by ``path`` or ``path::name``."""
    found: dict[str, int] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            if EXEMPT in text.splitlines():
                continue
            name = path.relative_to(root).as_posix()
            if (lines := len(text.splitlines())) > MODULE_LINES:
                found[name] = lines
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    length = (node.end_lineno or node.lineno) - node.lineno + 1
                    if length > FUNCTION_LINES:
                        key = f"{name}::{node.name}"  # the longest of a name's definitions
                        found[key] = max(length, found.get(key, 0))
    return found


def test_every_module_and_function_is_within_the_size_rules() -> None:
    over = measured_sizes()
    assert over == {}, f"over the size rules (name: lines): {over}; split them"


def test_the_rules_see_a_long_function_and_a_long_module(tmp_path: Path) -> None:
    package = tmp_path / "steering_core"
    package.mkdir()
    body = "\n".join(f"    x{i} = {i}" for i in range(70))
    (package / "long.py").write_text(f"def long() -> None:\n{body}\n", encoding="utf-8")
    (package / "big.py").write_text("x = 1\n" * 401, encoding="utf-8")
    (package / "table.py").write_text(EXEMPT + "\n" + "x = 1\n" * 500, encoding="utf-8")
    assert measured_sizes(tmp_path) == {
        "steering_core/long.py::long": 71,
        "steering_core/big.py": 401,
    }
