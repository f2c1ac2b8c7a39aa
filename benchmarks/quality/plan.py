"""The quality study's plan: which methods, which learning-rate grids, which runs, in what order.

Two protocols, each written down (``README.md``) before its runs: v1 (one epoch, three grid
points per method) and v2 (up to two epochs keeping the best validation checkpoint, grids
extended past a chosen edge, pyreft's ReFT; ``V2_PROTOCOLS``). Torch-free.

Every run is named by a key (``{method}-lr{lr}-s{seed}``) and its result file is
``runs/{protocol}/{key}.json``; the plan is recomputed from whatever results exist, so the study
resumes where it stopped. Per method: the learning-rate sweep (seed 0, every grid point) comes
first, the best point on the *validation* split is selected (see :func:`select`), then the other
seeds run at that point. Methods are ordered so that the comparisons the targets
name finish first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DATA = ROOT / "data" / "tasks"

# Three points from each of the paper's grids (METHOD.md sections 3-4).
STEERING_GRID = (1e-3, 2e-3, 5e-3)  # paper {5e-4, 1e-3, 2e-3, 3e-3, 5e-3}
FULL_GRID = (1e-5, 3e-5, 1e-4)  # paper {5e-6 ... 1e-4}
LORA_GRID = (2e-4, 5e-4, 1.5e-3)  # paper {5e-5 ... 1.5e-3}


def _post_block(site: str = "block_output", kind: str = "nonlinear", rank: int = 8) -> dict:
    return {
        "type": "post_block",
        "site": {"name": site},
        "adapter": {"kind": kind, "rank": rank},
    }


def _joint(orthogonal: bool) -> dict:
    return {
        "type": "joint",
        "orthogonality": {"enabled": orthogonal, "every_n_steps": 10},
    }


@dataclass(frozen=True)
class MethodPlan:
    name: str
    label: str
    method: dict[str, Any] | None  # None: the base model, untrained
    grid: tuple[float, ...]
    # joint: the steering half trains at the learning rate selected for this method
    steering_lr_from: str | None = None
    # v2: the points added, in order, when the rate chosen on the grid is its top (above) or
    # its bottom (below) edge; a protocol allows at most ``max_extensions`` of each
    above: tuple[float, ...] = ()
    below: tuple[float, ...] = ()
    # (protocol, method): that protocol's runs of that method at the same learning rate and
    # seed train exactly this configuration under the same rules; they count as this method's
    # runs here (copied in by :func:`adopt_same_runs`, marked ``reused_from``)
    same_runs_as: tuple[str, str] | None = None
    # distillation: (method, learning rate) of the source each run trains first, same seed
    source: tuple[dict[str, Any], float] | None = None
    # a row made of another method's runs' ``source`` block (never run on its own)
    derived_from: str | None = None


# Priority order: the targets' comparisons first (post-block vs full, ReFT, post-MLP; LoRA and
# joint), then the rest of the variants and the site ablation. The first CORE methods of every
# protocol run before the variants of any (see ``run.py``), so that each task's verdicts on the
# targets come first.
METHODS: tuple[MethodPlan, ...] = (
    MethodPlan("base", "base model (no training)", None, ()),
    MethodPlan("post_block", "post-block nonlinear r=8", _post_block(), STEERING_GRID),
    MethodPlan("full", "full fine-tuning", {"type": "full"}, FULL_GRID),
    MethodPlan(
        "reft",
        "ReFT (LoReFT) r=8 @ mlp_output, all tokens",
        # v1's ReFT: every token, generated ones included (the service's all-token variant)
        {"type": "reft", "rank": 8, "site": {"name": "mlp_output"}, "positions": "all"},
        STEERING_GRID,
    ),
    MethodPlan(
        "site_mlp",
        "nonlinear r=8 @ mlp_output (post-MLP)",
        _post_block("mlp_output"),
        STEERING_GRID,
    ),
    MethodPlan("lora", "LoRA r=8, 7 projections", {"type": "lora"}, LORA_GRID),
    MethodPlan(
        "joint", "joint (LoRA + post-block, orthogonal)", _joint(True), LORA_GRID, "post_block"
    ),
    MethodPlan(
        "post_block_linear",
        "post-block linear r=8",
        _post_block(kind="linear"),
        STEERING_GRID,
    ),
    MethodPlan(
        "site_attn",
        "nonlinear r=8 @ attn_output",
        _post_block("attn_output"),
        STEERING_GRID,
    ),
    MethodPlan(
        "joint_no_orth",
        "joint without the orthogonal projection",
        _joint(False),
        LORA_GRID,
        "post_block",
    ),
    MethodPlan("post_block_r1", "post-block nonlinear r=1", _post_block(rank=1), STEERING_GRID),
    MethodPlan("post_block_vector", "post-block vector", _post_block(kind="vector"), STEERING_GRID),
)
METHODS_BY_NAME = {m.name: m for m in METHODS}
CORE = ("base", "post_block", "full", "reft", "site_mlp", "lora", "joint")

# Protocol v2 (README.md, "Protocol v2"): v1's grids, then one point beyond a chosen edge at a
# time, at most two per side (one on Gemma).
STEERING_ABOVE, STEERING_BELOW = (1e-2, 2e-2), (5e-4, 2e-4)
FULL_ABOVE, FULL_BELOW = (2e-4, 5e-4), (5e-6, 2e-6)
LORA_ABOVE, LORA_BELOW = (3e-3, 6e-3), (1e-4, 5e-5)
METHODS_V2: tuple[MethodPlan, ...] = (
    MethodPlan(
        "post_block",
        "post-block nonlinear r=8",
        _post_block(),
        STEERING_GRID,
        above=STEERING_ABOVE,
        below=STEERING_BELOW,
    ),
    MethodPlan(
        "full", "full fine-tuning", {"type": "full"}, FULL_GRID, above=FULL_ABOVE, below=FULL_BELOW
    ),
    MethodPlan(
        "reft",
        "ReFT (LoReFT) r=8, block output, first and last 7 prompt tokens (pyreft)",
        {"type": "reft", "rank": 8, "site": {"name": "block_output"}, "positions": "f7+l7"},
        STEERING_GRID,
        above=STEERING_ABOVE,
        below=STEERING_BELOW,
    ),
    MethodPlan(
        "lora",
        "LoRA r=8, 7 projections",
        {"type": "lora"},
        LORA_GRID,
        above=LORA_ABOVE,
        below=LORA_BELOW,
    ),
    MethodPlan(
        "joint",
        "joint (LoRA + post-block, orthogonal)",
        _joint(True),
        LORA_GRID,
        "post_block",
        above=LORA_ABOVE,
        below=LORA_BELOW,
    ),
)


@dataclass(frozen=True)
class Protocol:
    """Data, budget and seeds of one study; results of different protocols never mix."""

    name: str
    model: str
    task: str
    train_file: Path
    validation_file: Path
    test_file: Path
    n_epochs: int = 1
    batch_size: int = 8
    gradient_accumulation_steps: int = 1
    max_seq_length: int = 256
    seeds: tuple[int, ...] = (0, 1, 2)
    quick: bool = False
    generation_check_items: int = 64
    max_new_tokens: int = 8  # the generation check's budget: the longest answer, and its EOS
    metric: str = "exact match of the answer"
    # 0: SmolLM2, the study's model; 1: Gemma-3-270M, "where time allows": none of its runs
    # starts before every tier-0 run (variants included) is done (``run.pending_runs``).
    tier: int = 0
    # The protocol whose validation sweeps choose this one's learning rates (None: sweep here),
    # and the methods this protocol runs (None: all of ``METHODS``).
    lr_from: Protocol | None = None
    methods: tuple[str, ...] | None = None
    out_dir: Path = HERE  # the study's runs and report are committed; a quick run's are not
    # v2: the method table, grid extensions per side, and training past one epoch with the
    # checkpoint of best validation loss kept (evaluated every ``eval_every_n_steps``)
    version: int = 1
    method_table: tuple[MethodPlan, ...] = METHODS
    max_extensions: int = 0
    eval_every_n_steps: int | None = None
    early_stopping_patience: int | None = None
    keep_best_validation: bool = False
    # which summary page the protocol's report joins (v1 and v2: summary.md, side by side)
    study: str = "v1"
    # how the learning rates were chosen, when not by this protocol's own sweeps
    rates_note: str | None = None
    # the paired comparisons (A, B) of the report; None: the method study's (report.py)
    comparisons: tuple[tuple[str, str], ...] | None = None

    @property
    def runs_dir(self) -> Path:
        return self.out_dir / "runs" / self.name

    @property
    def report_stem(self) -> Path:
        return self.out_dir / f"results-{self.name}"

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "task": self.task,
            "train_items": _count_lines(self.train_file),
            "validation_items": _count_lines(self.validation_file),
            "test_items": _count_lines(self.test_file),
            "n_epochs": self.n_epochs,
            "batch_size": self.batch_size,
            "gradient_accumulation_steps": self.gradient_accumulation_steps,
            "seeds": list(self.seeds),
            "lr_from": self.lr_from.name if self.lr_from is not None else None,
            "metric": self.metric,
            "generation_check_items": self.generation_check_items,
            "protocol_version": self.version,
            "max_grid_extensions_per_side": self.max_extensions,
            "eval_every_n_steps": self.eval_every_n_steps,
            "early_stopping_patience": self.early_stopping_patience,
            "keep_best_validation": self.keep_best_validation,
            "study": self.study,
            "rates_note": self.rates_note,
        }


def _count_lines(path: Path) -> int:
    with path.open(encoding="utf-8") as handle:
        return sum(1 for line in handle if line.strip())


# The study's models: protocol name suffix -> (catalogue name, tier).
MODELS = {"smollm2": ("smollm2-135m-instruct", 0), "gemma3": ("gemma-3-270m", 1)}


def _second_model(model: str, make: Callable[[str], Protocol]) -> dict[str, Any]:
    """Gemma-3-270M trains 2.2-2.4x slower per token than SmolLM2 here (twice the parameters,
    a 262k-token vocabulary; ``benchmarks/speed/results-gemma-3-270m.md``), too slowly for every
    sweep on this CPU: it runs the core methods at the learning rates that SmolLM2's validation
    sweeps chose for the same task, three seeds each."""
    if MODELS[model][1] == 0:
        return {}
    return {"lr_from": make("smollm2"), "methods": CORE}


def listops_protocol(model: str = "smollm2") -> Protocol:
    name, tier = MODELS[model]
    return Protocol(
        name=f"listops-{model}",
        model=name,
        task="listops",
        train_file=DATA / "listops_train.jsonl",
        validation_file=DATA / "listops_validation.jsonl",
        test_file=DATA / "listops_test.jsonl",
        tier=tier,
        **_second_model(model, listops_protocol),
    )


def arithmetic_protocol(model: str = "smollm2") -> Protocol:
    """GSM8K-style word problems with rationales (``make_data.py`` makes the splits).

    Scored like ListOps, by teacher forcing: an item counts when greedy decoding reproduces
    its whole completion, rationale and answer, exactly. That is stricter than the task's
    scorer (the final number only); the generation check on the first test items measures how
    far apart the two are.
    """
    data = HERE / "data"
    name, tier = MODELS[model]
    return Protocol(
        name=f"arithmetic-{model}",
        model=name,
        task="arithmetic",
        tier=tier,
        train_file=data / "arithmetic_train.jsonl",
        validation_file=data / "arithmetic_validation.jsonl",
        test_file=data / "arithmetic_test.jsonl",
        max_new_tokens=80,  # the longest completion is 74 tokens
        metric="exact match of rationale and answer",
        **_second_model(model, arithmetic_protocol),
    )


PROTOCOLS_V1 = {
    f"{task}-{model}": partial(make, model)
    for model in MODELS
    for task, make in (("listops", listops_protocol), ("arithmetic", arithmetic_protocol))
}

# v2's training: up to two epochs (250 steps of 8 items), validation loss every 25 steps, the
# checkpoint of the best one kept; stop early after 4 evaluations (100 steps) without a better one.
V2_TRAINING: dict[str, Any] = {
    "version": 2,
    "method_table": METHODS_V2,
    "n_epochs": 2,
    "eval_every_n_steps": 25,
    "early_stopping_patience": 4,
    "keep_best_validation": True,
}


def _v2(protocol: Protocol, **changes: Any) -> Protocol:
    return replace(protocol, name=f"{protocol.name}-v2", study="v2", **{**V2_TRAINING, **changes})


def _sharing(
    methods: tuple[MethodPlan, ...], name: str, same_runs_as: tuple[str, str]
) -> tuple[MethodPlan, ...]:
    """``methods`` with ``name`` counting ``same_runs_as``'s runs as its own."""
    return tuple(replace(m, same_runs_as=same_runs_as) if m.name == name else m for m in methods)


V2_PROTOCOLS = {
    "listops-smollm2-v2": lambda: _v2(listops_protocol("smollm2"), max_extensions=2),
    # post-block's sweep chose 5e-3, the layer study's rate for arithmetic: that study's
    # all-layers arm trains the same configuration (seed 0 agrees item for item), so its seeds
    # count here
    "arithmetic-smollm2-v2": lambda: _v2(
        arithmetic_protocol("smollm2"),
        max_extensions=2,
        method_table=_sharing(METHODS_V2, "post_block", ("arithmetic-smollm2-layers", "all")),
    ),
    # Gemma-3-270M: its own sweeps (v1 took SmolLM2's rates), one added point per side at most,
    # post-block, full fine-tuning and ReFT only; after every SmolLM2 run (tier 1).
    "listops-gemma3-v2": lambda: _v2(
        listops_protocol("gemma3"),
        max_extensions=1,
        lr_from=None,
        methods=("post_block", "full", "reft"),
    ),
}

# The layer study: at an equal budget of a third of SmolLM2's 30 layers at r=8, the layers
# ``site.layers: "auto"`` chooses against the last third and against evenly spaced layers, and
# all 30 layers (three times the budget) beside them; v2's training and selection rules, three
# seeds, one learning rate per task (``LAYER_RATES``), no sweep.
SMOLLM2_LAYERS = 30
LAYER_BUDGET = SMOLLM2_LAYERS // 3
LAYER_COMPARISONS = (
    ("auto", "last_third"),
    ("auto", "even"),
    ("auto", "all"),
    ("last_third", "even"),
)


def evenly_spaced(n_layers: int, k: int) -> list[int]:
    """``k`` layers spread over ``n_layers``, each the middle of its share (30, 10: 1, 4 ... 28)."""
    return sorted({min(n_layers - 1, int((i + 0.5) * n_layers / k)) for i in range(k)})


def _post_block_on(layers: list[int] | str | None, lr: float) -> dict:
    method = _post_block()
    if layers == "auto":
        method["site"].update(layers="auto", max_layers=LAYER_BUDGET)
    elif layers is not None:
        method["site"]["layers"] = layers
    return method


def layer_methods(lr: float, all_layers_from: str) -> tuple[MethodPlan, ...]:
    n, k = SMOLLM2_LAYERS, LAYER_BUDGET
    return (
        MethodPlan(
            "auto",
            f'post-block r=8, layers "auto", max_layers {k}',
            _post_block_on("auto", lr),
            (lr,),
        ),
        MethodPlan(
            "last_third",
            f"post-block r=8, the last third (layers {n - k}-{n - 1})",
            _post_block_on(list(range(n - k, n)), lr),
            (lr,),
        ),
        MethodPlan(
            "even",
            f"post-block r=8, {k} evenly spaced layers ({evenly_spaced(n, k)})",
            _post_block_on(evenly_spaced(n, k), lr),
            (lr,),
        ),
        MethodPlan(
            "all",
            f"post-block r=8, all {n} layers (3x the budget)",
            _post_block_on(None, lr),
            (lr,),
            same_runs_as=(all_layers_from, "post_block"),
        ),
    )


# ListOps: v2's post-block sweep is complete and chose 2e-3 (results-listops-smollm2-v2.md);
# arithmetic: v2's sweep has not run, so v1's choice, 5e-3 (results-arithmetic-smollm2.md).
LAYER_RATES = {
    "listops": (2e-3, "v2's validation sweep for post-block on this task chose 2e-3"),
    "arithmetic": (
        5e-3,
        "v1's validation sweep for post-block on this task chose 5e-3 (v2's has not run yet)",
    ),
}


def _layers(protocol: Protocol) -> Protocol:
    lr, note = LAYER_RATES[protocol.task]
    v2 = _v2(protocol)
    return replace(
        v2,
        name=f"{protocol.name}-layers",
        study="layers",
        method_table=layer_methods(lr, v2.name),
        max_extensions=0,
        rates_note=f"one learning rate for every arm, {lr:g}: {note}",
        comparisons=LAYER_COMPARISONS,
    )


# The distillation study (ListOps, SmolLM2, v2's rules, 3 seeds): each run trains a source (a
# LoRA or a full fine-tune, at v1's chosen rates: 1.5e-3 and 1e-4; v2's sweeps of them are not
# complete), scores it, distils it into a post-block adapter (r=8, every layer, at v2's
# post-block rate 2e-3) and scores that: the study's runs leave no artifact behind, so a source
# lives only as long as its run. Post-block trained on the labels (v2's runs) stands beside.
DISTILL_STUDENT = {
    "type": "distill",
    "source": "the source trained in the same run",
    "trains": _post_block(),
}
DISTILL_SOURCES = {"lora": ({"type": "lora"}, 1.5e-3), "full": ({"type": "full"}, 1e-4)}
DISTILL_COMPARISONS = (
    ("distill_lora", "lora_source"),
    ("distill_full", "full_source"),
    ("distill_lora", "post_block"),
    ("distill_full", "post_block"),
)
METHODS_DISTILL: tuple[MethodPlan, ...] = (
    *(
        MethodPlan(
            f"distill_{name}",
            f"post-block r=8 distilled from {label} (its source, same seed)",
            DISTILL_STUDENT,
            (2e-3,),
            source=DISTILL_SOURCES[name],
        )
        for name, label in (("lora", "LoRA"), ("full", "full fine-tuning"))
    ),
    *(
        MethodPlan(
            f"{name}_source",
            f"{label} (the source; trained in each distill_{name} run)",
            DISTILL_SOURCES[name][0],
            (DISTILL_SOURCES[name][1],),
            derived_from=f"distill_{name}",
        )
        for name, label in (("lora", "LoRA r=8"), ("full", "full fine-tuning"))
    ),
    MethodPlan(
        "post_block",
        "post-block nonlinear r=8, trained on the labels",
        _post_block(),
        (2e-3,),
        same_runs_as=("listops-smollm2-v2", "post_block"),
    ),
)


def _distill_study(protocol: Protocol) -> Protocol:
    return replace(
        _v2(protocol),
        name=f"{protocol.name}-distill",
        study="distill",
        method_table=METHODS_DISTILL,
        max_extensions=0,
        rates_note="sources at v1's chosen rates (LoRA 1.5e-3, full 1e-4), students and "
        "post-block at v2's post-block rate 2e-3",
        comparisons=DISTILL_COMPARISONS,
    )


def derived_results(
    protocol: Protocol, results: dict[str, dict[str, Any]]
) -> dict[str, dict[str, Any]]:
    """``results`` with the rows ``derived_from`` other runs: each distillation run's source
    block as a run of the source method at its rate and seed."""
    out = dict(results)
    for method in methods_of(protocol):
        if method.derived_from is None:
            continue
        for record in results.values():
            if not record["key"].startswith(f"{method.derived_from}-") or not record.get("source"):
                continue
            seed = record["config"]["seed"]
            key = run_key(method.name, method.grid[0], seed)
            config = {**record["config"], "method": method.method, "source": None}
            config["learning_rate"] = method.grid[0]
            out[key] = {**record["source"], "key": key, "config": config}
    return out


LAYER_PROTOCOLS = {
    "listops-smollm2-layers": lambda: _layers(listops_protocol("smollm2")),
    "arithmetic-smollm2-layers": lambda: _layers(arithmetic_protocol("smollm2")),
}
DISTILL_PROTOCOLS = {
    "listops-smollm2-distill": lambda: _distill_study(listops_protocol("smollm2")),
}
PROTOCOLS = {**PROTOCOLS_V1, **V2_PROTOCOLS, **LAYER_PROTOCOLS, **DISTILL_PROTOCOLS}
# What ``run.py`` runs unless told otherwise: v2 (v1 is complete for SmolLM2; its pending
# Gemma-3 runs are not run).
STUDY = tuple(V2_PROTOCOLS)


def quick_protocol(model: str, work: Path) -> Protocol:
    """Minutes, not hours: a few items, one seed, the middle grid point (a smoke run)."""
    work.mkdir(parents=True, exist_ok=True)
    files = {}
    for split, n in (("train", 48), ("validation", 32), ("test", 64)):
        lines = (DATA / f"listops_{split}.jsonl").read_text(encoding="utf-8").splitlines()[:n]
        files[split] = work / f"listops_{split}.jsonl"
        files[split].write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Protocol(
        name=f"quick-{model}",
        model=model,
        task="listops",
        train_file=files["train"],
        validation_file=files["validation"],
        test_file=files["test"],
        seeds=(0,),
        quick=True,
        out_dir=work,
        max_seq_length=512,  # the tiny test model's tokenizer is byte-level
        generation_check_items=16,
    )


def run_key(method: str, lr: float | None, seed: int) -> str:
    return f"{method}-lr{lr:g}-s{seed}" if lr is not None else f"{method}-s{seed}"


@dataclass
class PlannedRun:
    key: str
    method: MethodPlan
    learning_rate: float | None
    seed: int
    steering_learning_rate: float | None = None
    purpose: str = "sweep"  # sweep | seed | baseline | transfer (a rate chosen elsewhere)


@dataclass
class Selection:
    """The learning rate chosen for one method and the sweep that chose it."""

    learning_rate: float
    validation: dict[float, tuple[float, float]] = field(default_factory=dict)  # lr: (acc, loss)


def load_results(runs_dir: Path) -> dict[str, dict[str, Any]]:
    results: dict[str, dict[str, Any]] = {}
    if runs_dir.is_dir():
        for path in sorted(runs_dir.glob("*.json")):
            record = json.loads(path.read_text(encoding="utf-8"))
            results[record["key"]] = record
    return results


def grid_for(
    method: MethodPlan, protocol: Protocol, results: dict[str, dict[str, Any]] | None = None
) -> tuple[float, ...]:
    """The sweep's points so far: the method's grid, then (v2) one point beyond the chosen
    edge at a time, once every point before it is in and the chosen rate is that edge, at most
    ``protocol.max_extensions`` per side."""
    if protocol.quick and method.grid:
        return (method.grid[len(method.grid) // 2],)
    grid = tuple(sorted(method.grid))
    if protocol.max_extensions == 0 or results is None:
        return grid
    added = {"above": 0, "below": 0}
    while True:
        chosen = _select_on(grid, method, protocol, results)
        if chosen is None:
            return grid  # the sweep so far is not complete
        side = {grid[-1]: "above", grid[0]: "below"}.get(chosen.learning_rate)
        ladder = method.above if side == "above" else method.below
        if side is None or added[side] >= min(protocol.max_extensions, len(ladder)):
            return grid  # interior, or as far as the protocol extends
        point = ladder[added[side]]
        added[side] += 1
        grid = (*grid, point) if side == "above" else (point, *grid)


def select(
    method: MethodPlan, protocol: Protocol, results: dict[str, dict[str, Any]]
) -> Selection | None:
    """The grid point to run the other seeds at, once the whole sweep is in (v2: the
    extended sweep, see :func:`grid_for`).

    Accuracy first, but differences smaller than one standard error of the best point's
    accuracy on the validation split count as ties (on 200 items that is ~3.5 points at 50%),
    and among the tied points the lowest answer-token loss wins: the loss, averaged over every
    answer token of the split, separates points that the accuracy of 200 items cannot.
    """
    return _select_on(grid_for(method, protocol, results), method, protocol, results)


@dataclass(frozen=True)
class GridEdge:
    """A chosen learning rate that is still an edge of its sweep once the sweep stops growing."""

    side: str  # "top" or "bottom"
    learning_rate: float
    added: int  # points added past the method's grid on that side
    reason: str  # why the grid stops there


def grid_edge(
    method: MethodPlan, protocol: Protocol, results: dict[str, dict[str, Any]]
) -> GridEdge | None:
    """Where a protocol that extends grids (v2) chose a rate at an edge of the final sweep:
    which edge, and why no further point was run. None for an interior rate, an unfinished
    sweep, a fixed-grid protocol or rates taken from another protocol."""
    if protocol.max_extensions == 0 or protocol.lr_from is not None or not method.grid:
        return None
    grid = grid_for(method, protocol, results)
    chosen = _select_on(grid, method, protocol, results)
    if chosen is None:  # the sweep, as far as grid_for has extended it, is not all in
        return None
    lr = chosen.learning_rate
    if lr not in (grid[0], grid[-1]):
        return None
    top = lr == grid[-1]
    added = sum(
        1 for point in grid if (point > max(method.grid) if top else point < min(method.grid))
    )
    reason = (
        f"the protocol adds at most {protocol.max_extensions} points per side"
        if added >= protocol.max_extensions
        else "the method's grid lists no further point on that side"
    )
    return GridEdge("top" if top else "bottom", lr, added, reason)


def _select_on(
    grid: tuple[float, ...],
    method: MethodPlan,
    protocol: Protocol,
    results: dict[str, dict[str, Any]],
) -> Selection | None:
    sweep, items = {}, {}
    for lr in grid:
        record = results.get(run_key(method.name, lr, protocol.seeds[0]))
        if record is None:
            return None
        sweep[lr] = (record["validation_accuracy"], record["validation_loss"])
        items[lr] = len(record["validation_correct"])
    top = max(sweep, key=lambda lr: sweep[lr][0])
    accuracy = sweep[top][0]
    standard_error = math.sqrt(accuracy * (1 - accuracy) / max(1, items[top]))
    tied = [lr for lr in sweep if sweep[lr][0] >= accuracy - standard_error]
    best = min(tied, key=lambda lr: (sweep[lr][1], -sweep[lr][0]))
    return Selection(learning_rate=best, validation=sweep)


def selection_for(
    method: MethodPlan, protocol: Protocol, results: dict[str, dict[str, Any]]
) -> Selection | None:
    """The learning rate ``method`` runs at under ``protocol``: chosen on its own sweep in
    ``results``, or on the sweep of ``protocol.lr_from`` (read from that protocol's runs)."""
    source = protocol.lr_from
    if source is None:
        return select(method, protocol, results)
    sweep = {}
    for lr in grid_for(method, source):
        key = run_key(method.name, lr, source.seeds[0])
        path = source.runs_dir / f"{key}.json"
        if path.is_file():
            sweep[key] = json.loads(path.read_text(encoding="utf-8"))
    return select(method, source, sweep)


def methods_of(
    protocol: Protocol, methods: tuple[MethodPlan, ...] | None = None
) -> tuple[MethodPlan, ...]:
    """The protocol's methods (from ``methods``, by default its own table), in table order."""
    table = protocol.method_table if methods is None else methods
    if protocol.methods is None:
        return table
    return tuple(m for m in table if m.name in protocol.methods)


def next_runs(
    protocol: Protocol, results: dict[str, dict[str, Any]], methods: tuple[MethodPlan, ...]
) -> list[PlannedRun]:
    """Every run still missing whose prerequisites are met, in priority order."""
    pending: list[PlannedRun] = []
    for method in methods_of(protocol, methods):
        if method.derived_from is not None:
            continue  # made of another method's runs
        steering_lr = None
        if method.steering_lr_from is not None:
            source = METHODS_BY_NAME[method.steering_lr_from]
            chosen = selection_for(source, protocol, results)
            if chosen is None:
                continue  # waits for the post-block sweep
            steering_lr = chosen.learning_rate
        if method.method is None:
            for seed in protocol.seeds[:1]:
                key = run_key(method.name, None, seed)
                if key not in results:
                    pending.append(PlannedRun(key, method, None, seed, purpose="baseline"))
            continue
        if protocol.lr_from is not None:  # every seed at the rate chosen elsewhere
            transferred = selection_for(method, protocol, results)
            if transferred is None:
                continue  # waits for the source protocol's sweep
            for seed in protocol.seeds:
                key = run_key(method.name, transferred.learning_rate, seed)
                if key not in results:
                    pending.append(
                        PlannedRun(
                            key, method, transferred.learning_rate, seed, steering_lr, "transfer"
                        )
                    )
            continue
        for lr in grid_for(method, protocol, results):
            key = run_key(method.name, lr, protocol.seeds[0])
            if key not in results:
                pending.append(PlannedRun(key, method, lr, protocol.seeds[0], steering_lr))
        selection = select(method, protocol, results)
        if selection is None:
            continue
        for seed in protocol.seeds[1:]:
            key = run_key(method.name, selection.learning_rate, seed)
            if key not in results:
                pending.append(
                    PlannedRun(key, method, selection.learning_rate, seed, steering_lr, "seed")
                )
    return pending


# What must match for another protocol's run to count as this one's (see ``same_runs_as``).
SAME_RUN_FIELDS = (
    "model",
    "task",
    "method",
    "learning_rate",
    "n_epochs",
    "batch_size",
    "gradient_accumulation_steps",
    "max_seq_length",
    "train_file",
    "validation_file",
    "test_file",
    "protocol_version",
    "eval_every_n_steps",
    "early_stopping_patience",
    "keep_best_validation",
)


def adopt_same_runs(protocol: Protocol, runs_dir_of: Callable[[str], Path]) -> list[str]:
    """Copy in the runs that another protocol already made of this one's methods (see
    ``MethodPlan.same_runs_as``), each marked ``reused_from``, once its configuration is checked
    to be the one this protocol would run. Returns the keys adopted."""
    adopted = []
    for method in methods_of(protocol):
        if method.same_runs_as is None:
            continue
        source, source_method = method.same_runs_as
        for lr in method.grid:
            for seed in protocol.seeds:
                key = run_key(method.name, lr, seed)
                target = protocol.runs_dir / f"{key}.json"
                found = runs_dir_of(source) / f"{run_key(source_method, lr, seed)}.json"
                if target.exists() or not found.is_file():
                    continue
                record = json.loads(found.read_text(encoding="utf-8"))
                planned = PlannedRun(key, method, lr, seed)
                wanted = run_config(protocol, planned, Path("."))
                if any(
                    _path_or_value(record["config"].get(f)) != _path_or_value(wanted[f])
                    for f in SAME_RUN_FIELDS
                ):
                    continue
                record["reused_from"] = f"{source}/{record['key']}"
                record["key"] = key
                protocol.runs_dir.mkdir(parents=True, exist_ok=True)
                target.write_text(json.dumps(record, indent=1) + "\n", encoding="utf-8")
                adopted.append(key)
    return adopted


def _path_or_value(value: Any) -> Any:
    """Data files compare by their path under the repository (checkouts differ in root)."""
    if isinstance(value, str) and value.endswith(".jsonl"):
        return Path(value).relative_to(Path(value).parents[2]).as_posix()
    return value


def run_config(protocol: Protocol, planned: PlannedRun, work_dir: Path) -> dict[str, Any]:
    """The JSON ``run_one.py`` reads (validated there by its ``RunConfig``)."""
    return {
        "key": planned.key,
        "model": protocol.model,
        "task": protocol.task,
        "method": planned.method.method,
        "learning_rate": planned.learning_rate,
        "steering_learning_rate": planned.steering_learning_rate,
        "seed": planned.seed,
        "n_epochs": protocol.n_epochs,
        "batch_size": protocol.batch_size,
        "gradient_accumulation_steps": protocol.gradient_accumulation_steps,
        "max_seq_length": protocol.max_seq_length,
        "train_file": str(protocol.train_file),
        "validation_file": str(protocol.validation_file),
        "test_file": str(protocol.test_file),
        "work_dir": str(work_dir),
        "generation_check_items": protocol.generation_check_items,
        "max_new_tokens": protocol.max_new_tokens,
        "protocol_version": protocol.version,
        "eval_every_n_steps": protocol.eval_every_n_steps,
        "early_stopping_patience": protocol.early_stopping_patience,
        "keep_best_validation": protocol.keep_best_validation,
        "source": (
            {"method": planned.method.source[0], "learning_rate": planned.method.source[1]}
            if planned.method.source is not None
            else None
        ),
    }
