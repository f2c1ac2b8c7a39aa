"""The quality report of a protocol whose learning rates come from another's sweeps."""

import json
from dataclasses import replace
from pathlib import Path

import pytest
from plan import FULL_GRID, LORA_GRID, STEERING_GRID, Protocol, listops_protocol, run_key
from report import build, markdown

TEST_ITEMS = 1000


def _record(key: str, seed: int, test_accuracy: float, validation_accuracy: float) -> dict:
    correct = round(test_accuracy * TEST_ITEMS)
    return {
        "key": key,
        "config": {"seed": seed, "steering_learning_rate": None},
        "validation_accuracy": validation_accuracy,
        "validation_loss": 1.0 - validation_accuracy,
        "validation_correct": "1" * round(validation_accuracy * 200)
        + "0" * (200 - round(validation_accuracy * 200)),
        "test_accuracy": correct / TEST_ITEMS,
        "test_correct": "1" * correct + "0" * (TEST_ITEMS - correct),
        "trainable_parameters": 1000,
        "trainable_percent": 0.1,
        "train_seconds": 10.0,
        "tokens_per_second": 100.0,
        "peak_rss_train_mib": 1024.0,
        "generation_check": {"agreement": 1.0, "generation_accuracy": test_accuracy},
    }


def _swept_then_seeded(
    method: str, grid: tuple[float, ...], per_seed: tuple[int, int, int]
) -> dict[str, dict]:
    """A method's seed-0 sweep (its middle rate best on validation) and seeds 1, 2 there, with
    ``per_seed`` test items right on each seed."""
    results = {}
    for lr, accuracy in zip(grid, (0.30, 0.50, 0.40), strict=True):
        key = run_key(method, lr, 0)
        results[key] = _record(key, 0, per_seed[0] / TEST_ITEMS, accuracy)
    for seed in (1, 2):
        key = run_key(method, grid[1], seed)
        results[key] = _record(key, seed, per_seed[seed] / TEST_ITEMS, 0.5)
    return results


def _gemma_after_smollm2_post_block_sweep(tmp_path: Path) -> Protocol:
    """Gemma's ListOps protocol, its rates from SmolLM2's, whose post-block sweep chose 2e-3."""
    source = replace(listops_protocol("smollm2"), out_dir=tmp_path)
    source.runs_dir.mkdir(parents=True)
    for lr, accuracy in zip(STEERING_GRID, (0.30, 0.50, 0.40), strict=True):
        key = run_key("post_block", lr, 0)
        (source.runs_dir / f"{key}.json").write_text(json.dumps(_record(key, 0, 0.5, accuracy)))
    return replace(listops_protocol("gemma3"), out_dir=tmp_path, lr_from=source)


def test_a_transferred_rate_is_reported_with_the_sweep_that_chose_it(tmp_path: Path) -> None:
    gemma = _gemma_after_smollm2_post_block_sweep(tmp_path)
    results = {
        key: _record(key, seed, 0.40 + 0.01 * seed, 0.45)
        for seed in (0, 1, 2)
        if (key := run_key("post_block", 2e-3, seed))
    }
    # not picked: a run at another rate, a variant (never run on Gemma), and a method whose
    # rate the source has not chosen yet
    for key in (
        run_key("post_block", 5e-3, 0),
        run_key("site_attn", 2e-3, 0),
        run_key("lora", LORA_GRID[0], 0),
    ):
        results[key] = _record(key, 0, 0.9, 0.9)

    report = build(gemma, results, "python benchmarks/quality/run.py")
    (post_block,) = report["methods"]
    assert post_block["method"] == "post_block" and post_block["learning_rate"] == 2e-3
    assert post_block["complete"] and post_block["seeds"] == [0, 1, 2]
    assert post_block["test_accuracy_per_seed"] == [40.0, 41.0, 42.0]
    assert post_block["sweep_validation_accuracy"] == {"0.001": 30.0, "0.002": 50.0, "0.005": 40.0}
    assert "site_attn" not in report["pending_methods"]  # a variant: never run on Gemma
    assert set(report["pending_methods"]) == {"base", "full", "reft", "site_mlp", "lora", "joint"}
    text = markdown(report, "results-listops-gemma3.png")
    assert "learning rates not swept on this model" in text and "`listops-smollm2`" in text


def test_a_transferred_rate_with_no_run_yet_is_pending_not_a_crash(tmp_path: Path) -> None:
    # The study's first Gemma result was its base run; the report then raised "no values" for
    # post-block, whose rate SmolLM2 had chosen but which had no Gemma run yet.
    gemma = _gemma_after_smollm2_post_block_sweep(tmp_path)
    base = run_key("base", None, 0)
    report = build(gemma, {base: _record(base, 0, 0.0, 0.0)}, "python benchmarks/quality/run.py")
    assert [m["method"] for m in report["methods"]] == ["base"]
    assert "post_block" in report["pending_methods"]


def test_a_v2_report_judges_only_the_targets_of_its_own_methods(tmp_path: Path) -> None:
    """v2 runs no post-MLP row: its report must not wait for one forever."""
    from plan import V2_PROTOCOLS

    protocol = replace(V2_PROTOCOLS["listops-smollm2-v2"](), out_dir=tmp_path)
    targets = build(protocol, {}, "run.py")["targets"]
    assert not any("post-MLP" in line for line in targets)
    assert any(line.startswith("post-block above ReFT") for line in targets)
    v1 = build(replace(listops_protocol(), out_dir=tmp_path), {}, "run.py")["targets"]
    assert any("post-MLP" in line for line in v1)


def test_an_above_target_is_judged_seed_aware_not_by_the_pooled_test(tmp_path: Path) -> None:
    """Post-block beats ReFT by +10 and +8 points on two seeds and loses by 6 on the third:
    pooled over items x seeds McNemar calls it (p far below 0.05), but three seeds that
    disagree cannot: the verdict follows the seed-aware interval."""
    protocol = replace(listops_protocol("smollm2"), out_dir=tmp_path)
    results = {
        **_swept_then_seeded("post_block", STEERING_GRID, (600, 440, 580)),
        **_swept_then_seeded("reft", STEERING_GRID, (500, 500, 500)),
    }
    report = build(protocol, results, "run.py")
    (test,) = [t for t in report["comparisons"] if (t["a"], t["b"]) == ("post_block", "reft")]
    assert test["p_value"] < 1e-6
    assert test["seed_differences_points"] == [10.0, -6.0, 8.0]
    assert test["seed_t_degrees_of_freedom"] == 2
    assert not test["a_better_seed_aware"]
    (line,) = [t for t in report["targets"] if t.startswith("post-block above ReFT")]
    assert "**missed**" in line and "+10.0, -6.0, +8.0" in line
    text = markdown(report, "x.png")
    assert "seeds+items 95%" in text and "(2 df)" in text


@pytest.mark.parametrize(
    ("full_per_seed", "where"),
    [
        ((530, 530, 530), "more than 1 point behind, beyond noise"),
        ((500, 500, 500), "within 1 point, beyond noise"),
        ((470, 560, 515), "the interval spans -1 point: not settled by these seeds"),
    ],
)
def test_the_full_fine_tuning_gap_says_what_its_seed_aware_interval_shows(
    tmp_path: Path, full_per_seed: tuple[int, int, int], where: str
) -> None:
    """Post-block scores 50.0% on every seed; the verdict on the 1-point margin keeps its
    rule (the mean gap) and carries the per-seed differences, their t interval and the
    seeds-and-items interval, with what that interval says of the margin."""
    protocol = replace(listops_protocol("smollm2"), out_dir=tmp_path)
    results = {
        **_swept_then_seeded("post_block", STEERING_GRID, (500, 500, 500)),
        **_swept_then_seeded("full", FULL_GRID, full_per_seed),
    }
    report = build(protocol, results, "run.py")
    (line,) = [t for t in report["targets"] if t.startswith("post-block within 1 point")]
    differences = ", ".join(f"{(500 - n) / 10:+.1f}" for n in full_per_seed)
    assert f"per seed {differences}, t interval " in line and "(2 df)" in line
    assert "seeds and items resampled: 95% interval " in line
    assert line.endswith(f", {where})")


def test_the_joint_verdict_carries_its_seed_aware_test_against_the_better_rival(
    tmp_path: Path,
) -> None:
    """Post-block (50.0%) beats LoRA (48.0%), so joint is tested against post-block."""
    protocol = replace(listops_protocol("smollm2"), out_dir=tmp_path)
    results = {
        **_swept_then_seeded("post_block", STEERING_GRID, (500, 500, 500)),
        **_swept_then_seeded("lora", LORA_GRID, (480, 480, 480)),
        **_swept_then_seeded("joint", LORA_GRID, (530, 520, 525)),
    }
    report = build(protocol, results, "run.py")
    (line,) = [t for t in report["targets"] if t.startswith("joint at least as good")]
    assert "**met**" in line and "against post_block: paired difference +2.50 points" in line
    assert "per seed +3.0, +2.0, +2.5, t interval " in line and "(2 df)" in line
    assert line.endswith(", better beyond noise)")


def _report(protocol: str, model: str, version: int, targets: list[str], **setup: object) -> dict:
    accuracy = {"mean": 50.0, "std": 1.0}
    return {
        "protocol": protocol,
        "setup": {"model": model, "task": "listops", "protocol_version": version, **setup},
        "methods": [
            {
                "method": "post_block",
                "label": "post-block nonlinear r=8",
                "test_accuracy": accuracy,
                "trainable_percent": 0.2,
                "complete": True,
            },
            {
                "method": "reft",
                "label": "ReFT",
                "test_accuracy": {"mean": 21.7, "std": 8.5},
                "trainable_percent": 0.2,
                "complete": True,
            },
        ],
        "comparisons": [],
        "targets": targets,
    }


def test_v1_and_v2_side_by_side_with_transferred_verdicts_withdrawn() -> None:
    from report import summary_by_protocol

    judged = [
        "post-block within 1 point of full fine-tuning: **met** (gap -1.3 points)",
        "post-block above ReFT with p < 0.05: **met** (+23.8 points)",
    ]
    v1 = [
        _report("listops-smollm2", "smollm2", 1, judged),
        _report("listops-gemma3", "gemma3", 1, judged, lr_from="listops-smollm2"),
    ]
    v2 = [
        _report(
            "listops-smollm2-v2",
            "smollm2",
            2,
            ["post-block above ReFT with p < 0.05: pending (runs missing)"],
        )
    ]
    page = summary_by_protocol(v1, v2)
    header = next(line for line in page.splitlines() if line.startswith("| method |"))
    assert header == "| method | smollm2/listops v1 | smollm2/listops v2 | gemma3/listops v1 |"
    smollm2 = page.split("## listops on smollm2")[1].split("## listops on gemma3")[0]
    gemma = page.split("## listops on gemma3")[1]
    # SmolLM2's v1 verdicts stand, its ReFT one says which ReFT it was; v2's sits beside it
    assert (
        "| post-block within 1 point of full fine-tuning | **met** (gap -1.3 points) | " in smollm2
    )
    reft_row = next(line for line in smollm2.splitlines() if "above ReFT" in line)
    assert "all-token variant" in reft_row and "~~" not in reft_row
    assert reft_row.endswith("| pending (runs missing) |")
    # Gemma's rates were transferred: every judged verdict is struck and says why
    gemma_rows = [line for line in gemma.splitlines() if line.startswith("| post-block")]
    assert len(gemma_rows) == 2
    assert all(
        "~~**met**" in row and "transferred from listops-smollm2" in row for row in gemma_rows
    )
    assert "21.7 ± 8.5% is a poor start" in gemma_rows[1]


def test_a_v2_report_names_a_rate_chosen_at_the_edge_where_its_sweep_stopped(
    tmp_path: Path,
) -> None:
    from plan import FULL_ABOVE, V2_PROTOCOLS

    protocol = replace(V2_PROTOCOLS["listops-smollm2-v2"](), out_dir=tmp_path)
    results = {}
    grid = (*FULL_GRID, *FULL_ABOVE)  # every added point above wins again
    for lr, accuracy in zip(grid, (0.30, 0.35, 0.40, 0.50, 0.60), strict=True):
        key = run_key("full", lr, 0)
        results[key] = _record(key, 0, 0.5, accuracy)
    report = build(protocol, results, "run.py")
    (full,) = [m for m in report["methods"] if m["method"] == "full"]
    assert full["grid_edge"]["side"] == "top" and full["grid_edge"]["learning_rate"] == grid[-1]
    text = markdown(report, "x.png")
    assert f"- full fine-tuning: {grid[-1]:g}, the top of its grid after 2 added points" in text
    assert "at most 2 points per side" in text


def test_a_v2_protocol_without_runs_reads_pending_beside_its_v1_verdicts(
    tmp_path: Path,
) -> None:
    """Gemma's v1 protocol has runs and its v2 protocol none yet: the summary page says the v2
    verdicts are pending and names the protocol, rather than calling them out of scope."""
    from plan import V2_PROTOCOLS
    from run import write_reports

    v1 = replace(listops_protocol("gemma3"), out_dir=tmp_path, lr_from=None)
    v1.runs_dir.mkdir(parents=True)
    results = {
        **_swept_then_seeded("post_block", STEERING_GRID, (500, 500, 500)),
        **_swept_then_seeded("full", FULL_GRID, (530, 530, 530)),
    }
    for key, record in results.items():
        (v1.runs_dir / f"{key}.json").write_text(json.dumps(record))
    v2 = replace(V2_PROTOCOLS["listops-gemma3-v2"](), out_dir=tmp_path)

    write_reports([v1, v2], (v1,), "run.py")

    page = (tmp_path / "summary.md").read_text()
    gemma = page.split(f"## listops on {v1.model}")[1]
    within = next(line for line in gemma.splitlines() if "within 1 point" in line)
    assert "**missed**" in within.split(" | ")[1]
    assert within.endswith("| pending (`listops-gemma3-v2` has no runs yet) |")
    assert "not in this protocol" not in within
    # Gemma's v2 runs no post-MLP and no joint row: those targets are out of its scope
    for target in ("above post-MLP", "joint at least as good"):
        row = next(line for line in gemma.splitlines() if target in line)
        assert row.endswith("| not in this protocol |")
