"""The quality study's report: a markdown table, a JSON summary, a PNG plot, the targets' verdicts.

Built from the run files alone (``runs/{protocol}/*.json``), so it can be rebuilt at any time,
while the study is still running: methods whose runs are not all in are listed as pending.
"""

from __future__ import annotations

import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from plan import (
    MethodPlan,
    Protocol,
    derived_results,
    grid_edge,
    methods_of,
    run_key,
    selection_for,
)
from stats import accuracy_by_group, mcnemar, seed_level, spread

# (A, B, what the target asks of A against B)
COMPARISONS: tuple[tuple[str, str], ...] = (
    ("post_block", "full"),
    ("post_block", "reft"),
    ("post_block", "site_mlp"),
    ("post_block", "site_attn"),
    ("post_block", "lora"),
    ("joint", "lora"),
    ("joint", "post_block"),
    ("joint", "joint_no_orth"),
    ("post_block", "post_block_linear"),
    ("post_block", "post_block_r1"),
    ("post_block", "post_block_vector"),
)


def item_groups(protocol: Protocol) -> list[str]:
    """A group per test item, for per-group scores: ListOps' root operator (``[MAX ...`` ->
    ``MAX``); for arithmetic, the number of rationale steps (``2 steps``)."""
    groups = []
    for line in protocol.test_file.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        record = json.loads(line)
        if protocol.task == "listops":
            expression = record["prompt"].split("Expression:\n", 1)[-1]
            groups.append(expression.lstrip("[ ").split(" ", 1)[0])
        else:
            groups.append(f"{record['completion'].count(chr(10))} steps")
    return groups


def group_order(groups: list[str]) -> list[str]:
    listops = ["MAX", "MIN", "MED", "SM"]
    return listops if set(groups) == set(listops) else sorted(set(groups))


def method_summary(
    method: MethodPlan, protocol: Protocol, results: dict[str, dict[str, Any]], groups: list[str]
) -> dict[str, Any] | None:
    """Mean/spread over seeds at the selected learning rate, or None while runs are missing."""
    if method.method is None:
        record = results.get(run_key(method.name, None, protocol.seeds[0]))
        if record is None:
            return None
        runs, lr, sweep = [record], None, {}
    else:
        selection = selection_for(method, protocol, results)
        if selection is None:
            return None
        lr, sweep = selection.learning_rate, selection.validation
        runs = [
            results[key]
            for seed in protocol.seeds
            if (key := run_key(method.name, lr, seed)) in results
        ]
        if not runs:  # a rate taken from another protocol (lr_from), none of its runs done yet
            return None
    accuracy = spread([100.0 * r["test_accuracy"] for r in runs])
    edge = grid_edge(method, protocol, results) if method.method is not None else None
    by_operator = [accuracy_by_group(r["test_correct"], groups) for r in runs]
    return {
        "method": method.name,
        "label": method.label,
        "learning_rate": lr,
        "steering_learning_rate": runs[0]["config"].get("steering_learning_rate"),
        "sweep_validation_accuracy": {f"{k:g}": round(100 * v[0], 2) for k, v in sweep.items()},
        "grid_edge": None if edge is None else edge.__dict__,
        "seeds": [r["config"]["seed"] for r in runs],
        "complete": len(runs) == (1 if method.method is None else len(protocol.seeds)),
        "test_accuracy": accuracy.__dict__,
        "test_accuracy_per_seed": [round(100.0 * r["test_accuracy"], 2) for r in runs],
        "validation_accuracy": spread([100.0 * r["validation_accuracy"] for r in runs]).mean,
        "validation_loss": spread([r["validation_loss"] for r in runs]).mean,
        "per_group": {
            op: round(100.0 * sum(d[op] for d in by_operator) / len(by_operator), 1)
            for op in by_operator[0]
        },
        "trainable_parameters": runs[0]["trainable_parameters"],
        "trainable_percent": runs[0]["trainable_percent"],
        "train_seconds": spread([r["train_seconds"] for r in runs]).mean,
        "tokens_per_second": spread([r["tokens_per_second"] for r in runs]).mean,
        "peak_rss_train_gib": max(r["peak_rss_train_mib"] for r in runs) / 1024.0,
        "generation_agreement": min(r["generation_check"]["agreement"] for r in runs),
        "layers_chosen": [r["layer_selection"]["chosen"] for r in runs if r.get("layer_selection")],
        "generation_accuracy": spread(
            [100.0 * r["generation_check"]["generation_accuracy"] for r in runs]
        ).mean,
        "_bits": [r["test_correct"] for r in runs],
    }


def compare(
    summaries: dict[str, dict[str, Any]],
    comparisons: tuple[tuple[str, str], ...] = COMPARISONS,
) -> list[dict[str, Any]]:
    rows = []
    for a, b in comparisons:
        if a not in summaries or b not in summaries:
            continue
        bits_a, bits_b = summaries[a]["_bits"], summaries[b]["_bits"]
        n = min(len(bits_a), len(bits_b))
        test = mcnemar(bits_a[:n], bits_b[:n])
        seeds = seed_level(bits_a[:n], bits_b[:n])
        rows.append(
            {
                "a": a,
                "b": b,
                "seeds_paired": n,
                "pairs": test.pairs,
                "difference_points": round(test.difference_points, 2),
                "ci95_points": [round(test.interval[0], 2), round(test.interval[1], 2)],
                "a_only": test.a_only,
                "b_only": test.b_only,
                "p_value": test.p_value,
                "seed_differences_points": [round(d, 2) for d in seeds.differences],
                "seed_t_interval_points": _rounded(seeds.t_interval),
                "seed_t_degrees_of_freedom": seeds.degrees_of_freedom,
                "seed_item_interval_points": _rounded(seeds.bootstrap_interval),
                "a_better_seed_aware": seeds.a_better,
            }
        )
    return rows


def _rounded(interval: tuple[float, float]) -> list[float | None]:
    """An interval for JSON: None for an unbounded end (one seed has no t interval)."""
    return [round(x, 2) if math.isfinite(x) else None for x in interval]


def verdicts(
    summaries: dict[str, dict[str, Any]],
    tests: list[dict[str, Any]],
    runs: set[str] | None = None,
) -> list[str]:
    """The study's targets, each met / missed / pending, with the numbers; only those whose
    methods the protocol ``runs`` (default: every target)."""

    def mean(name: str) -> float | None:
        found = summaries.get(name)
        return found["test_accuracy"]["mean"] if found and found["complete"] else None

    def test(a: str, b: str) -> dict[str, Any] | None:
        return next((t for t in tests if t["a"] == a and t["b"] == b), None)

    lines = []
    pb, full = mean("post_block"), mean("full")
    if pb is None or full is None:
        lines.append("post-block within 1 point of full fine-tuning: pending (runs missing)")
    else:
        gap = full - pb
        verdict = "met" if gap <= 1.0 else "missed"
        found = test("post_block", "full")
        paired = "" if found is None else f"; {_gap_certainty(found)}"
        lines.append(
            f"post-block within 1 point of full fine-tuning: **{verdict}** "
            f"(post-block {pb:.1f}%, full {full:.1f}%, gap {gap:+.1f} points{paired})"
        )
    for other, label in (("site_mlp", "post-MLP"), ("reft", "ReFT")):
        if runs is not None and other not in runs:
            continue  # not a method of this protocol (v2 has no post-MLP row)
        found, ours = test("post_block", other), mean(other)
        if found is None or ours is None or pb is None:
            lines.append(f"post-block above {label} with p < 0.05: pending (runs missing)")
            continue
        # judged seed-aware: the interval from resampling seeds and items lies above zero
        met = bool(found.get("a_better_seed_aware"))
        lines.append(
            f"post-block above {label} with p < 0.05: **{'met' if met else 'missed'}** "
            f"(post-block {pb:.1f}% vs {ours:.1f}%, paired difference "
            f"{found['difference_points']:+.2f} points; seeds and items resampled: 95% "
            f"interval {_interval(found, 'seed_item_interval_points')}; per seed "
            f"{_seed_differences(found)}, t interval {_seed_t(found)}; pooled McNemar "
            f"p = {found['p_value']:.2g}, which counts items x seeds as independent)"
        )
    joint, lora = mean("joint"), mean("lora")
    if runs is not None and "joint" not in runs:
        return lines  # no joint row in this protocol (Gemma's v2)
    if joint is None or lora is None or pb is None:
        lines.append("joint at least as good as the better of LoRA and post-block: pending")
    else:
        best, rival = max((lora, "lora"), (pb, "post_block"))
        found = test("joint", rival)
        paired = "" if found is None else f"; against {rival}: {_paired_certainty(found)}"
        lines.append(
            "joint at least as good as the better of LoRA and post-block: "
            f"**{'met' if joint >= best else 'missed'}** (joint {joint:.1f}%, LoRA {lora:.1f}%, "
            f"post-block {pb:.1f}%{paired})"
        )
    return lines


def layer_verdicts(summaries: dict[str, dict[str, Any]], tests: list[dict[str, Any]]) -> list[str]:
    """The layer study's expectation, tested: the layers "auto" chooses do at least as well as
    the hand-picked thirds at the same budget (met when auto's mean over seeds is at least the
    other's; the seed-aware interval says how sure), and where auto stands against all layers."""
    lines = []
    for other, label in (
        ("last_third", "the last third"),
        ("even", "evenly spaced layers"),
        ("all", "all layers (3x the parameters)"),
    ):
        a, b = summaries.get("auto"), summaries.get(other)
        found = next((t for t in tests if t["a"] == "auto" and t["b"] == other), None)
        claim = "auto at least as good as " + label
        if a is None or b is None or found is None or not (a["complete"] and b["complete"]):
            lines.append(f"{claim}: pending (runs missing)")
            continue
        mean_a, mean_b = a["test_accuracy"]["mean"], b["test_accuracy"]["mean"]
        verdict = "met" if mean_a >= mean_b else "missed"
        reading = _noise_reading(found)
        sure = f"auto {reading}" if "beyond" in reading else "within noise"
        lines.append(
            f"{claim}: **{verdict}** (auto {mean_a:.1f}%, {other} {mean_b:.1f}%, paired "
            f"difference {found['difference_points']:+.2f} points, per seed "
            f"{_seed_differences(found)}; seeds and items resampled: 95% interval "
            f"{_interval(found, 'seed_item_interval_points')}, {sure})"
        )
    return lines


DISTILL_TARGET = 0.9  # the share of its source's accuracy a distilled adapter should reach


def distill_verdicts(
    summaries: dict[str, dict[str, Any]], tests: list[dict[str, Any]]
) -> list[str]:
    """Each distilled adapter against its source (at least 90% of its accuracy, met or missed
    with the shortfall), with the paired test behind it."""
    lines = []
    for name, label in (("lora", "LoRA"), ("full", "full fine-tuning")):
        student, source = summaries.get(f"distill_{name}"), summaries.get(f"{name}_source")
        found = next(
            (t for t in tests if t["a"] == f"distill_{name}" and t["b"] == f"{name}_source"), None
        )
        claim = f"post-block distilled from {label} reaches 90% of its source's accuracy"
        if student is None or source is None or found is None or not student["complete"]:
            lines.append(f"{claim}: pending (runs missing)")
            continue
        ours, theirs = student["test_accuracy"]["mean"], source["test_accuracy"]["mean"]
        share = ours / theirs if theirs else float("nan")
        verdict = "met" if share >= DISTILL_TARGET else "missed"
        shortfall = (
            "" if verdict == "met" else f", short by {DISTILL_TARGET * theirs - ours:.1f} points"
        )
        lines.append(
            f"{claim}: **{verdict}** (distilled {ours:.1f}%, source {theirs:.1f}%: "
            f"{100 * share:.0f}%{shortfall}; paired difference {found['difference_points']:+.2f} "
            f"points, per seed {_seed_differences(found)}, t interval {_seed_t(found)}; seeds "
            f"and items resampled: 95% interval {_interval(found, 'seed_item_interval_points')})"
        )
    return lines


def _gap_certainty(test: dict[str, Any], margin: float = 1.0) -> str:
    """Post-block minus full fine-tuning, seed-aware, and what its interval says of the
    1-point margin: beyond it, inside it, or not settled by these seeds."""
    interval = test.get("seed_item_interval_points")
    if not interval or None in interval:
        where = "no interval"
    elif interval[1] < -margin:
        where = f"more than {margin:g} point behind, beyond noise"
    elif interval[0] >= -margin:
        where = f"within {margin:g} point, beyond noise"
    else:
        where = f"the interval spans -{margin:g} point: not settled by these seeds"
    return f"{_paired(test)}, {where}"


def _paired_certainty(test: dict[str, Any]) -> str:
    """A minus B, seed-aware, and whether the seeds-and-items interval clears zero."""
    return f"{_paired(test)}, {_noise_reading(test)}"


def _noise_reading(test: dict[str, Any]) -> str:
    """Where the seeds-and-items interval of A - B lies against zero."""
    interval = test.get("seed_item_interval_points")
    if not interval or None in interval:
        return "no interval"
    if interval[0] > 0:
        return "better beyond noise"
    if interval[1] < 0:
        return "worse beyond noise"
    return "within noise"


def _paired(test: dict[str, Any]) -> str:
    return (
        f"paired difference {test['difference_points']:+.2f} points, per seed "
        f"{_seed_differences(test)}, t interval {_seed_t(test)}; seeds and items resampled: "
        f"95% interval {_interval(test, 'seed_item_interval_points')}"
    )


def _interval(test: dict[str, Any], key: str = "ci95_points") -> str:
    found = test.get(key)
    if not found or None in found:
        return "n/a"
    low, high = found
    return f"{low:+.1f} to {high:+.1f}"


def _seed_differences(test: dict[str, Any]) -> str:
    return ", ".join(f"{d:+.1f}" for d in test.get("seed_differences_points", []))


def _seed_t(test: dict[str, Any]) -> str:
    degrees = test.get("seed_t_degrees_of_freedom", 0)
    if not degrees:
        return "n/a (one seed)"
    return f"{_interval(test, 'seed_t_interval_points')} ({degrees} df)"


def build(protocol: Protocol, runs: dict[str, dict[str, Any]], command: str) -> dict[str, Any]:
    results = derived_results(protocol, runs)
    groups = item_groups(protocol)
    summaries = {}
    methods = methods_of(protocol)
    for method in methods:
        found = method_summary(method, protocol, results, groups)
        if found is not None:
            summaries[method.name] = found
    tests = compare(summaries, protocol.comparisons or COMPARISONS)
    pending = [
        m.name for m in methods if m.name not in summaries or not summaries[m.name]["complete"]
    ]
    return {
        "protocol": protocol.name,
        "setup": protocol.describe(),
        "groups": group_order(groups),
        "command": command,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, CPU only",
        "date": time.strftime("%Y-%m-%d"),
        "runs_done": len(runs),
        "methods": [{k: v for k, v in s.items() if k != "_bits"} for s in summaries.values()],
        "comparisons": tests,
        "targets": (
            ["not judged: a quick smoke run (a few items, one seed) measures nothing"]
            if protocol.quick
            else layer_verdicts(summaries, tests)
            if protocol.study == "layers"
            else distill_verdicts(summaries, tests)
            if protocol.study == "distill"
            else verdicts(summaries, tests, {m.name for m in methods})
        ),
        "pending_methods": pending,
        "runs": [
            {
                "key": key,
                "validation_accuracy": round(100 * r["validation_accuracy"], 2),
                "test_accuracy": round(100 * r["test_accuracy"], 2),
                "validation_loss": round(r["validation_loss"], 4),
                "train_seconds": r["train_seconds"],
                "generation_agreement": r["generation_check"]["agreement"],
                "reused_from": r.get("reused_from"),
            }
            for key, r in sorted(runs.items())
        ],
    }


def write(report: dict[str, Any], out_stem: Path) -> None:
    out_stem.with_suffix(".json").write_text(json.dumps(report, indent=1) + "\n")
    out_stem.with_suffix(".md").write_text(markdown(report, out_stem.name + ".png"))
    plot(report, out_stem.with_suffix(".png"))


def _rates_sentence(setup: dict[str, Any]) -> str:
    """How the learning rates were chosen: on this protocol's own sweep, or on another's."""
    seeds = setup["seeds"]
    if setup.get("rates_note"):
        return (
            f"{setup['rates_note']}; seeds {', '.join(map(str, seeds))}; each run trains up to "
            f"{setup['n_epochs']} epochs, evaluated every {setup['eval_every_n_steps']} steps, "
            "keeping the checkpoint of best validation loss (protocol v2's rules, README.md)"
        )
    if setup.get("lr_from"):
        return (
            "**learning rates not swept on this model**: each method runs at the rate that "
            f"`{setup['lr_from']}`'s validation sweep chose (the sweep's validation accuracies, "
            f"on that model, are the ones shown in brackets), seeds {', '.join(map(str, seeds))}; "
            "this model trains over twice as slowly per token as SmolLM2 here "
            "(`benchmarks/speed/results-gemma-3-270m.md`), too slowly for every sweep, so it "
            "runs the core methods only"
        )
    later = f"; then seeds {', '.join(map(str, seeds[1:]))} at that rate" if len(seeds) > 1 else ""
    grid = "three points of the paper's grid"
    if setup.get("protocol_version", 1) > 1:
        grid += (
            f", extended one point at a time past a chosen edge (at most "
            f"{setup['max_grid_extensions_per_side']} per side); each run trains up to "
            f"{setup['n_epochs']} epochs, evaluated every {setup['eval_every_n_steps']} steps, "
            "keeping the checkpoint of best validation loss (protocol v2, README.md)"
        )
    return (
        f"learning rate chosen per method on {setup['validation_items']} validation items "
        f"(seed {seeds[0]}, {grid}{later})"
    )


def _selection_sentences(setup: dict[str, Any]) -> str:
    """How the method study chose its rates, and how joint trains (not the other studies')."""
    return (
        "Selection: the best validation accuracy, where points within one standard error of it "
        "count as tied and the lowest answer-token loss among them wins "
        + (
            "(this rule replaced plain accuracy after the first post-block sweep, whose three "
            "points were within one standard error; their test accuracies had been seen by then)"
            if setup["task"] == "listops"
            else "(the rule the ListOps study settled on, fixed before any run of this task)"
        )
        + ". Joint: the LoRA half's rate is swept, the steering half trains at the rate chosen "
        "for post-block; the orthogonal projection runs every 10 steps. "
    )


def markdown(report: dict[str, Any], png_name: str) -> str:
    setup = report["setup"]
    lines = [
        f"# Quality: {setup['model']} on generated {setup['task']}",
        "",
        f"Command: `{report['command']}` ({report['date']}, {report['machine']}). "
        f"{report['runs_done']} runs so far.",
        "",
        f"Setup: {setup['train_items']} training items, {setup['n_epochs']} epoch(s), batch "
        f"{setup['batch_size']} x grad-accum {setup['gradient_accumulation_steps']}, fp32; "
        + _rates_sentence(setup)
        + f"; scored on "
        f"{setup['test_items']} test items. Accuracy: greedy decoding reproduces "
        + (
            "`<answer>{value}</answer>` exactly"
            if setup["task"] == "listops"
            else "the whole completion, every rationale line and `Answer: {number}`, exactly, "
            "which is stricter than the task's scorer (it reads the final number only)"
        )
        + ", decided in one teacher-forced pass. `gen acc`: the task's scorer on real greedy "
        f"generations of the first {setup.get('generation_check_items', 64)} test items; "
        "`agree`: the share of those items where it gives the same verdict as the "
        "teacher-forced pass (the lowest over seeds). "
        + (_selection_sentences(setup) if setup.get("study", "v1") in ("v1", "v2") else "")
        + "Training time and tokens/s come from runs on one torch thread "
        "each, two side by side on the 2 cores, with other work on the machine at times "
        "and some runs paused (stopped, the clock running) while a speed benchmark measured "
        "alone; the machine's own speed also varied about 2x from day to day: read them as "
        "rough; `benchmarks/speed/` has the clean speed figures. Runs from "
        "2026-11-29 on train with the engine's labelled-positions loss "
        "(`steering_core/methods/loss.py`: "
        "the same loss and gradients, the output projection skipped where no label needs it; "
        "`engine_loss` in each run's JSON); the runs before it used transformers' loss.",
        "",
        "## Targets",
        "",
        *[f"- {line}" for line in report["targets"]],
        "",
        "## Methods",
        "",
        "| method | lr (val acc % per grid point) | test acc % mean ± sd (seeds) | "
        + " | ".join(report["groups"])
        + " | trainable | % of model | train s | tokens/s | peak RSS GiB | gen acc | agree |",
        "|---|---|---|" + "---:|" * (len(report["groups"]) + 7),
    ]
    for m in report["methods"]:
        acc = m["test_accuracy"]
        lr = (
            "-"
            if m["learning_rate"] is None
            else f"**{m['learning_rate']:g}** ("
            + ", ".join(f"{k}: {v:.1f}" for k, v in m["sweep_validation_accuracy"].items())
            + ")"
        )
        if m["steering_learning_rate"]:
            lr += f"; steering {m['steering_learning_rate']:g}"
        ops = m["per_group"]
        done = "" if m["complete"] else " *(seeds pending)*"
        lines.append(
            f"| {m['label']}{done} | {lr} | {acc['mean']:.1f} ± {acc['std']:.1f} "
            f"({', '.join(f'{v:.1f}' for v in m['test_accuracy_per_seed'])}) | "
            + " | ".join(f"{ops.get(group, 0):.0f}" for group in report["groups"])
            + f" | {m['trainable_parameters']:,} | {m['trainable_percent']:.3f} | "
            f"{m['train_seconds']:.0f} | {m['tokens_per_second']:.0f} | "
            f"{m['peak_rss_train_gib']:.2f} | {m['generation_accuracy']:.0f}% "
            f"| {100 * m['generation_agreement']:.0f}% |"
        )
    edges = [m for m in report["methods"] if m.get("grid_edge")]
    if edges:
        lines += ["", "Rates chosen at an edge of their sweep, where the sweep stopped:", ""]
        lines += [
            f"- {m['label']}: {e['learning_rate']:g}, the {e['side']} of its grid after "
            f"{e['added']} added point{'s' if e['added'] != 1 else ''}; no further point "
            f"because {e['reason']}, so a better rate may lie beyond it"
            for m in edges
            for e in [m["grid_edge"]]
        ]
    lines += [
        "",
        "## Paired tests",
        "",
        "Seed-aware first (the verdicts use it): A-B per seed (seed s of A against seed s of "
        "B), a t interval over those differences (seeds - 1 degrees of freedom: 2 with 3 "
        "seeds, hence wide), and a 95% interval from resampling seeds and items together "
        "(4000 draws), which includes run-to-run variance. Then the pooled view: McNemar's "
        "exact test over items x seeds (which treats every (item, seed) pair as independent and "
        "so overstates certainty) with its interval clustered by item.",
        "",
        "| A | B | A-B points | per seed | t interval | seeds+items 95% | pairs "
        "| item-clustered 95% | A only | B only | McNemar p |",
        "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for t in report["comparisons"]:
        lines.append(
            f"| {t['a']} | {t['b']} | {t['difference_points']:+.2f} | {_seed_differences(t)} "
            f"| {_seed_t(t)} | {_interval(t, 'seed_item_interval_points')} "
            f"| {t['pairs']} ({t['seeds_paired']} seed(s)) | {_interval(t)} "
            f"| {t['a_only']} | {t['b_only']} | {t['p_value']:.3g} |"
        )
    if report["pending_methods"]:
        lines += [
            "",
            "Pending (runs not all in yet): " + ", ".join(report["pending_methods"]) + ".",
        ]
    chosen = [m for m in report["methods"] if m.get("layers_chosen")]
    if chosen:
        lines += ["", "## Layers chosen", ""]
        lines += [
            f"- {m['label']}: "
            + "; ".join(
                f"seed {seed}: {layers}"
                for seed, layers in zip(m["seeds"], m["layers_chosen"], strict=True)
            )
            for m in chosen
        ]
    reused = [r for r in report["runs"] if r.get("reused_from")]
    if reused:
        lines += [
            "",
            "Runs shared with another protocol (the same configuration, training rules and "
            "seed; run once): "
            + ", ".join(f"{r['key']} = `{r['reused_from']}`" for r in reused)
            + ".",
        ]
    lines += ["", f"![test accuracy by method]({png_name})", ""]
    lines += [
        "## Every run so far",
        "",
        "| run | val acc % | val loss | test acc % | train s | agree |",
        "|---|---:|---:|---:|---:|---:|",
        *[
            f"| {r['key']} | {r['validation_accuracy']:.1f} | {r['validation_loss']:.4f} | "
            f"{r['test_accuracy']:.1f} | {r['train_seconds']:.0f} | "
            f"{100 * r['generation_agreement']:.0f}% |"
            for r in report["runs"]
        ],
        "",
    ]
    return "\n".join(lines)


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = report["methods"]
    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    names = [m["method"] for m in methods]
    means = [m["test_accuracy"]["mean"] for m in methods]
    left.bar(range(len(methods)), means, color="#9ab")
    for i, m in enumerate(methods):
        left.scatter(
            [i] * len(m["test_accuracy_per_seed"]),
            m["test_accuracy_per_seed"],
            color="k",
            s=10,
            zorder=3,
        )
    left.set_xticks(range(len(methods)), names, rotation=40, ha="right", fontsize=8)
    left.set_ylabel("test accuracy % (bar: mean; dots: seeds)")
    left.set_title(f"{report['setup']['model']}, {report['setup']['task']}")
    for m in methods:
        if m["trainable_parameters"]:
            right.scatter(m["trainable_percent"], m["test_accuracy"]["mean"], s=25)
            right.annotate(
                m["method"], (m["trainable_percent"], m["test_accuracy"]["mean"]), fontsize=7
            )
    right.set_xscale("log")
    right.set_xlabel("trainable parameters, % of the model (log)")
    right.set_ylabel("test accuracy % (mean over seeds)")
    right.set_title("accuracy vs adapter size")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary(reports: list[dict[str, Any]], title: str = "Quality study at a glance") -> str:
    """Every protocol on one page: test accuracy per method and task, the targets' verdicts,
    and the paired differences behind them."""
    names = [r["protocol"] for r in reports]
    lines = [
        f"# {title}",
        "",
        "Built by `python benchmarks/quality/run.py` from the per-task reports beside it "
        "(" + ", ".join(f"`results-{name}.md`" for name in names) + "), which hold the "
        "setup, the sweeps, per-seed numbers, cost and every run. Test accuracy in %, mean ± "
        "sd over seeds at the learning rate chosen on validation; *italic*: seeds still "
        "running; -: not run yet.",
        "",
        "| method | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    lines += _accuracy_rows(reports)
    lines += ["", "(In brackets: trainable parameters, % of the model.)", ""]
    for report in reports:
        lines += [f"## {report['protocol']}", "", *[f"- {t}" for t in report["targets"]], ""]
        if report["comparisons"]:
            lines += [*_comparison_table(report["comparisons"]), ""]
    return "\n".join(lines)


def _accuracy_rows(reports: list[dict[str, Any]]) -> list[str]:
    """One table row per method of ``reports`` (in their tables' order), one cell per report:
    mean ± sd test accuracy and the trainable share; italic while seeds are missing."""
    by_method = [{m["method"]: m for m in r["methods"]} for r in reports]
    labels: dict[str, str] = {}
    for report in reports:
        for m in report["methods"]:
            labels.setdefault(m["method"], m["label"])
    rows = []
    for name, label in labels.items():
        cells = []
        for found in by_method:
            m = found.get(name)
            if m is None:
                cells.append("-")
                continue
            acc = m["test_accuracy"]
            cell = f"{acc['mean']:.1f} ± {acc['std']:.1f} ({m['trainable_percent']:.3g}%)"
            cells.append(cell if m["complete"] else f"*{cell}*")
        if any(cell != "-" for cell in cells):
            rows.append(f"| {label} | " + " | ".join(cells) + " |")
    return rows


def _comparison_table(tests: list[dict[str, Any]]) -> list[str]:
    """The paired differences: pooled, per seed, and the seed-aware intervals."""
    return [
        "| A - B | points | per seed | seeds+items 95% | t interval | McNemar p (pooled) |",
        "|---|---:|---|---:|---:|---:|",
        *[
            f"| {t['a']} - {t['b']} | {t['difference_points']:+.2f} | "
            f"{_seed_differences(t)} | {_interval(t, 'seed_item_interval_points')} | "
            f"{_seed_t(t)} | {t['p_value']:.2g} |"
            for t in tests
        ],
    ]


def _task_key(report: dict[str, Any]) -> tuple[str, str]:
    return report["setup"]["model"], report["setup"]["task"]


def _reft_note(report: dict[str, Any], target: str) -> str | None:
    """v1's ReFT row is not ReFT as pyreft runs it: say so beside any verdict against it."""
    if report["setup"].get("protocol_version", 1) == 1 and "above ReFT" in target:
        return (
            "against v1's all-token variant at the MLP output, not LoReFT at the first and last "
            "prompt tokens; v2 runs the faithful one"
        )
    return None


def _withdrawn_reason(report: dict[str, Any], target: str) -> str | None:
    """Why a verdict no longer stands, or None: a protocol whose learning rates were
    transferred from another model's sweeps judges nothing (and a ReFT that starts poorly
    under a rate chosen for another model measures the transfer, not ReFT)."""
    source = report["setup"].get("lr_from")
    if not source:
        return None
    reason = (
        f"withdrawn: its learning rates were transferred from {source}'s sweeps, not chosen "
        "on this model's validation set"
    )
    reft = next((m for m in report["methods"] if m["method"] == "reft"), None)
    if "ReFT" in target and reft is not None:
        accuracy = reft["test_accuracy"]
        reason += (
            f"; ReFT's {accuracy['mean']:.1f} ± {accuracy['std']:.1f}% is a poor start of v1's "
            "all-token variant under that rate, not a measure of ReFT"
        )
    return reason


def _verdict_cell(
    report: dict[str, Any] | None, target: str, waiting: dict[str, Any] | None = None
) -> str:
    """``report``'s verdict on ``target``; ``waiting``: the report, built from no runs, of a
    protocol whose runs have not started, whose own targets read pending."""
    if report is None:
        if waiting is not None and any(t.split(":", 1)[0] == target for t in waiting["targets"]):
            return f"pending (`{waiting['protocol']}` has no runs yet)"
        return "not in this protocol"
    line = next((t for t in report["targets"] if t.split(":", 1)[0] == target), None)
    if line is None:
        return "not in this protocol"
    verdict = line.split(":", 1)[1].strip()
    judged = "**met**" in verdict or "**missed**" in verdict
    if judged and (reason := _withdrawn_reason(report, target)):
        return f"~~{verdict}~~ ({reason})"
    if judged and (note := _reft_note(report, target)):
        return f"{verdict} ({note})"
    return verdict


def summary_by_protocol(
    v1: list[dict[str, Any]],
    v2: list[dict[str, Any]],
    v2_waiting: list[dict[str, Any]] | None = None,
) -> str:
    """Protocols v1 and v2 on one page: test accuracy per method, task and protocol, each
    target's verdict under both, and the paired differences behind them. ``v2_waiting``: the
    reports, built from no runs, of v2 protocols not started yet; their targets read pending."""
    waiting = {_task_key(report): report for report in v2_waiting or []}
    tasks: list[tuple[str, str]] = []
    for report in [*v1, *v2]:
        if _task_key(report) not in tasks:
            tasks.append(_task_key(report))
    by_task = {
        key: (
            next((r for r in v1 if _task_key(r) == key), None),
            next((r for r in v2 if _task_key(r) == key), None),
        )
        for key in tasks
    }
    columns = [
        (key, version, r)
        for key, pair in by_task.items()
        for version, r in zip(("v1", "v2"), pair, strict=True)
        if r is not None
    ]
    lines = [
        "# Quality study at a glance: protocols v1 and v2",
        "",
        "Built by `python benchmarks/quality/run.py` from the per-task reports beside it "
        "(" + ", ".join(f"`results-{r['protocol']}.md`" for _, _, r in columns) + "), which "
        "hold the setup, the sweeps, per-seed numbers, cost and every run. v1 trains one epoch "
        "on a fixed learning-rate grid; v2 (dated in `README.md`) extends the grid at its edges, "
        "trains longer keeping the checkpoint of best validation loss, and runs ReFT as pyreft "
        "does. Test accuracy in %, mean ± sd over seeds at the learning rate chosen on "
        "validation; *italic*: seeds still running; -: not run yet.",
        "",
        "| method | " + " | ".join(f"{m}/{t} {v}" for (m, t), v, _ in columns) + " |",
        "|---|" + "---:|" * len(columns),
    ]
    lines += _accuracy_rows([r for _, _, r in columns])
    lines += ["", "(In brackets: trainable parameters, % of the model.)", ""]
    for (model, task), (old, new) in by_task.items():
        lines += [f"## {task} on {model}", "", "| target | v1 | v2 |", "|---|---|---|"]
        targets: list[str] = []
        for report in (old, new):
            for line in report["targets"] if report else []:
                name = line.split(":", 1)[0]
                if name not in targets:
                    targets.append(name)
        lines += [
            f"| {name} | {_verdict_cell(old, name)} | "
            f"{_verdict_cell(new, name, waiting.get((model, task)))} |"
            for name in targets
        ]
        lines.append("")
        for version, report in (("v1", old), ("v2", new)):
            if report is None or not report["comparisons"]:
                continue
            lines += [
                f"Paired differences, {version} (`{report['protocol']}`):",
                "",
                *_comparison_table(report["comparisons"]),
                "",
            ]
    return "\n".join(lines)
