"""The security section of the reliability report: its cases are real tests, and rewriting the
section leaves the rest of the report as it was."""

import ast
import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "security_section", ROOT / "benchmarks" / "reliability" / "security.py"
)
assert _spec and _spec.loader
security = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = security  # dataclasses look their module up
_spec.loader.exec_module(security)


def _test_functions(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    return {
        node.name
        for node in tree.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.name.startswith("test_")
    }


def test_every_case_names_a_test_that_exists() -> None:
    nodes = [case.node for cases in security.CATEGORIES.values() for case in cases]
    assert len(nodes) == len(set(nodes))
    for node in nodes:
        module, _, name = node.partition("::")
        path = ROOT / module
        assert path.is_file(), node
        if name:
            assert name in _test_functions(path), node


REPORT = (
    "# Reliability report\n\n| a | b |\n\n## Schema-driven fuzzing\n\nfuzz\n\n"
    "## Test runs\n\n- r1\n"
)


def test_a_new_section_goes_before_the_test_runs() -> None:
    text = security.replace_section(REPORT, "## Security\n\nfirst\n")
    assert text.index("## Security") < text.index("## Test runs")
    assert text.replace("## Security\n\nfirst\n\n", "") == REPORT


def test_rewriting_the_section_replaces_it_and_keeps_the_rest() -> None:
    once = security.replace_section(REPORT, "## Security\n\nfirst\n")
    twice = security.replace_section(once, "## Security\n\nsecond\n")
    assert "first" not in twice and twice.count("## Security") == 1
    assert twice == once.replace("first", "second")


def test_a_section_at_the_end_is_replaced_whole() -> None:
    text = REPORT + "\n## Security\n\nold\n\n### Tenant isolation\n\nold rows\n"
    assert (
        security.replace_section(text, "## Security\n\nnew\n") == REPORT + "\n## Security\n\nnew\n"
    )
