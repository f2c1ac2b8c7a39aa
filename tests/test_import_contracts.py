"""The layering contracts of pyproject.toml: `make test` runs them, they hold, and they see a
violation when one is there."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _contracts() -> list[dict]:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return config["tool"]["importlinter"]["contracts"]


def _lint(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_make_test_runs_the_import_contracts() -> None:
    makefile = (ROOT / "Makefile").read_text()
    target = re.search(r"^test: .*?\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert target is not None
    commands = target.group(1)
    assert "lint-imports" in commands
    assert commands.index("lint-imports") < commands.index("pytest")


def test_every_contract_is_kept() -> None:
    result = _lint()
    assert result.returncode == 0, result.stdout[-4000:]
    assert f"Contracts: {len(_contracts())} kept, 0 broken." in result.stdout


def test_a_torch_import_in_the_api_breaks_a_contract(tmp_path: Path) -> None:
    """The same engine on a contract the code does break (the API's generation path imports
    torch): the tool reports it, with the chain."""
    config = tmp_path / "contracts.toml"
    config.write_text(
        '[tool.importlinter]\nroot_packages = ["api", "steering_core", "registry", "worker"]\n'
        "include_external_packages = true\n\n"
        "[[tool.importlinter.contracts]]\n"
        'name = "no torch at all in the API"\ntype = "forbidden"\n'
        'source_modules = ["api"]\nforbidden_modules = ["torch"]\n'
    )
    result = _lint(str(config))
    assert result.returncode != 0
    assert "no torch at all in the API BROKEN" in result.stdout
    assert "api.services.generation -> torch" in result.stdout
