"""The method registry: discovery through entry points, definitions and their shared rules."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib.metadata import EntryPoint
from pathlib import Path
from typing import Literal

import pytest

from steering_core.errors import ConfigValidationError
from steering_core.methods.definition import MethodDefaults, MethodDefinition, MethodSizeError
from steering_core.methods.registry import (
    ENTRY_POINT_GROUP,
    MethodRegistryError,
    discover,
    method_definition,
    method_names,
    parse_method,
)
from steering_core.spec.method_config import StrictModel
from steering_core.spec.training_spec import Hyperparameters, resolve_hyperparameters

ROOT = Path(__file__).resolve().parents[3]
METHODS_DIR = ROOT / "steering_core" / "methods"
DEFAULTS = MethodDefaults(learning_rate=1e-3, lr_scheduler="linear", warmup_ratio=0.0)


class _Probe(StrictModel):
    type: Literal["probe"] = "probe"


PROBE = MethodDefinition(
    name="probe", config=_Probe, defaults=DEFAULTS, description="a test method", handler="x:Y"
)
NOT_A_DEFINITION = {"name": "probe"}


def _entry(name: str, attribute: str) -> EntryPoint:
    return EntryPoint(name, f"{__name__}:{attribute}", ENTRY_POINT_GROUP)


def test_every_method_folder_is_registered_through_pyproject() -> None:
    folders = sorted(p.parent.name for p in METHODS_DIR.glob("*/__init__.py"))
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][
        ENTRY_POINT_GROUP
    ]
    assert folders == sorted(declared) == method_names()
    for name, target in declared.items():
        assert target == f"steering_core.methods.{name}:METHOD"


def test_the_built_in_defaults_are_the_method_md_ones() -> None:
    expected = {
        "post_block": (9e-4, "linear", 0.03),
        "reft": (9e-4, "linear", 0.03),
        "joint": (2e-4, "cosine", 0.06),
        "lora": (5e-4, "linear", 0.03),
        "full": (2e-5, "linear", 0.03),
    }
    for name, (lr, scheduler, warmup) in expected.items():
        resolved = resolve_hyperparameters(name, Hyperparameters(), n_examples=100)
        assert (resolved.learning_rate, resolved.lr_scheduler, resolved.warmup_ratio) == (
            lr,
            scheduler,
            warmup,
        )


def test_discover_takes_real_entry_points() -> None:
    assert discover([_entry("probe", "PROBE")]) == {"probe": PROBE}


@pytest.mark.parametrize(
    ("entry", "words"),
    [
        (_entry("probe", "NOT_A_DEFINITION"), "not a MethodDefinition"),
        (_entry("probe", "MISSING"), "does not load"),
        (_entry("other", "PROBE"), "names a definition called 'probe'"),
    ],
    ids=["wrong-type", "missing-attribute", "name-mismatch"],
)
def test_a_broken_entry_point_is_named(entry: EntryPoint, words: str) -> None:
    with pytest.raises(MethodRegistryError, match=words) as raised:
        discover([entry])
    assert entry.name in str(raised.value)


def test_no_entry_points_says_how_to_install() -> None:
    with pytest.raises(MethodRegistryError, match="pip install -e"):
        discover([])


def test_a_definition_must_match_its_config_type() -> None:
    with pytest.raises(ValueError, match=r"type: Literal\['other'\]"):
        MethodDefinition(
            name="other", config=_Probe, defaults=DEFAULTS, description="", handler="x:Y"
        )


def test_an_unknown_method_lists_the_registered_ones() -> None:
    expected = "unknown method 'reinforcement'; available: distill, dpo, full"
    with pytest.raises(ConfigValidationError, match=expected):
        method_definition("reinforcement")


def test_size_checks_name_the_field() -> None:
    joint = method_definition("joint")
    config = parse_method({"type": "joint", "lora": {"rank": 40}, "site": {"layers": [0, 2]}})
    with pytest.raises(MethodSizeError, match=r"lora\.rank=40 exceeds m's hidden size 32") as err:
        joint.check_sizes(config, n_layers=3, hidden_size=32, model="m")
    assert err.value.field == "lora.rank"
    with pytest.raises(MethodSizeError, match=r"site.layers \[2\] out of range") as err:
        joint.check_sizes(config, n_layers=2, hidden_size=64)
    assert err.value.field == "site.layers"
    vector = parse_method({"type": "post_block", "adapter": {"kind": "vector", "rank": 999}})
    method_definition("post_block").check_sizes(vector, n_layers=3, hidden_size=32)  # no rank
    assert method_definition("post_block").ranks(vector) == {}


def test_data_formats_are_checked_by_the_definition() -> None:
    post_block = method_definition("post_block")
    post_block.check_data_format("chat")
    with pytest.raises(ConfigValidationError, match="accepts chat, prompt_completion, alpaca"):
        post_block.check_data_format("preference", "train.jsonl")


def test_joint_refuses_its_projection_under_zero_stages() -> None:
    joint = method_definition("joint")
    on = parse_method({"type": "joint"})
    assert joint.allowed_zero_stages(on) == (0,)
    joint.check_zero_stage(on, 0)
    for stage in (1, 2, 3):
        with pytest.raises(ConfigValidationError, match=f"zero_stage {stage}.*use zero_stage 0"):
            joint.check_zero_stage(on, stage)
    off = parse_method({"type": "joint", "orthogonality": {"enabled": False}})
    assert joint.allowed_zero_stages(off) == (0, 1, 2, 3)
    for stage in (0, 1, 2, 3):
        joint.check_zero_stage(off, stage)
    # a method without a rule of its own trains under every stage
    post_block = method_definition("post_block")
    post_block.check_zero_stage(parse_method({"type": "post_block"}), 3)
    assert post_block.allowed_zero_stages(parse_method({"type": "post_block"})) == (0, 1, 2, 3)


def test_listing_methods_and_their_schemas_needs_no_torch() -> None:
    code = (
        "import sys\n"
        "from steering_core.methods.registry import method_definitions\n"
        "for d in method_definitions():\n"
        "    d.config.model_json_schema()\n"
        "import api.schemas, steer.user_cli\n"
        "heavy = [m for m in ('torch', 'transformers', 'peft') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
