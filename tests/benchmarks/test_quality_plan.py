"""The quality study's plan: sweep, selection on validation, seeds, resumption order."""

import fcntl
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from plan import METHODS_BY_NAME, STEERING_GRID, Protocol, next_runs, run_key, select

PROTOCOL = Protocol(
    name="unit",
    model="m",
    task="listops",
    train_file=Path("train.jsonl"),
    validation_file=Path("val.jsonl"),
    test_file=Path("test.jsonl"),
)


def _result(key: str, accuracy: float, loss: float = 1.0, items: int = 200) -> dict:
    return {
        "key": key,
        "validation_accuracy": accuracy,
        "validation_loss": loss,
        "validation_correct": "1" * round(accuracy * items)
        + "0" * (items - round(accuracy * items)),
    }


def _keys(methods: tuple[str, ...], results: dict) -> list[str]:
    return [r.key for r in next_runs(PROTOCOL, results, tuple(METHODS_BY_NAME[m] for m in methods))]


def test_sweep_comes_first_and_seeds_wait_for_it() -> None:
    keys = _keys(("post_block",), {})
    assert keys == [run_key("post_block", lr, 0) for lr in STEERING_GRID]


def _sweep(points: dict[float, tuple[float, float]], items: int = 200) -> dict:
    return {
        run_key("post_block", lr, 0): _result(run_key("post_block", lr, 0), acc, loss, items)
        for lr, (acc, loss) in points.items()
    }


def test_accuracy_differences_within_one_standard_error_go_to_the_loss() -> None:
    method = METHODS_BY_NAME["post_block"]
    # The first study's post-block sweep: 49.5 / 47.0 / 49.0 % on 200 items (SE 3.5 points).
    results = _sweep({1e-3: (0.495, 0.1793), 2e-3: (0.47, 0.1771), 5e-3: (0.49, 0.1699)})
    chosen = select(method, PROTOCOL, results)
    assert chosen is not None and chosen.learning_rate == 5e-3
    assert _keys(("post_block",), results) == [
        run_key("post_block", 5e-3, 1),
        run_key("post_block", 5e-3, 2),
    ]


def test_a_clear_accuracy_lead_wins_over_a_lower_loss() -> None:
    method = METHODS_BY_NAME["post_block"]
    results = _sweep({1e-3: (0.60, 0.30), 2e-3: (0.45, 0.10), 5e-3: (0.40, 0.05)})
    assert select(method, PROTOCOL, results).learning_rate == 1e-3
    # the same gap on 20 items is within one standard error (~11 points): the loss decides
    small = _sweep({1e-3: (0.60, 0.30), 2e-3: (0.55, 0.10), 5e-3: (0.40, 0.05)}, items=20)
    assert select(method, PROTOCOL, small).learning_rate == 2e-3


def test_incomplete_sweep_selects_nothing() -> None:
    results = {run_key("post_block", 1e-3, 0): _result(run_key("post_block", 1e-3, 0), 0.4)}
    assert select(METHODS_BY_NAME["post_block"], PROTOCOL, results) is None
    assert _keys(("post_block",), results) == [
        run_key("post_block", lr, 0) for lr in STEERING_GRID[1:]
    ]


def test_joint_waits_for_the_post_block_rate_and_uses_it() -> None:
    assert _keys(("joint",), {}) == []
    results = {
        run_key("post_block", lr, 0): _result(run_key("post_block", lr, 0), acc)
        for lr, acc in zip(STEERING_GRID, (0.3, 0.5, 0.4), strict=True)
    }
    planned = next_runs(PROTOCOL, results, (METHODS_BY_NAME["joint"],))
    assert len(planned) == 3
    assert {p.steering_learning_rate for p in planned} == {2e-3}


def test_base_runs_once_and_finished_runs_are_never_planned_again() -> None:
    assert _keys(("base",), {}) == ["base-s0"]
    assert _keys(("base",), {"base-s0": _result("base-s0", 0.0)}) == []


def _live_run(folder: Path) -> subprocess.Popen:
    """A process that holds ``folder``'s run lock through an inherited descriptor, as
    ``Slot.launch`` arranges (the orchestrator that started it has closed its own copy: it may
    be dead). Kill it to end the run."""
    folder.mkdir(parents=True)
    lock_fd = os.open(folder / "lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(lock_fd, fcntl.LOCK_EX)
    try:
        return subprocess.Popen(
            [sys.executable, "-c", "import time; time.sleep(60)"], pass_fds=(lock_fd,)
        )
    finally:
        os.close(lock_fd)


def test_runs_of_another_orchestrator_are_seen_while_their_process_lives(tmp_path: Path) -> None:

    from run import running_elsewhere

    fake = _live_run(tmp_path / "runs" / "listops-smollm2" / "post_block-lr0.005-s1")
    try:
        stale = tmp_path / "runs" / "listops-smollm2" / "stale"
        stale.mkdir()
        (stale / "lock").touch()  # a run that ended: its lock file stays, unheld
        (tmp_path / "runs" / "arithmetic-smollm2" / "never-started").mkdir(parents=True)
        live = {"listops-smollm2/post_block-lr0.005-s1"}
        assert running_elsewhere(tmp_path) == live
        assert running_elsewhere(tmp_path) == live  # checking frees nothing
    finally:
        fake.kill()
        fake.wait()
    assert running_elsewhere(tmp_path) == set()


def test_a_launched_run_holds_its_lock_until_it_exits(tmp_path: Path) -> None:
    from run import Slot, running_elsewhere

    folder = tmp_path / "runs" / "p" / "k"
    folder.mkdir(parents=True)
    config = tmp_path / "missing-config.json"  # run_one fails on it, after a moment
    slot = Slot.launch("p/k", config, tmp_path / "results", folder, threads=1)
    assert slot.result_path == tmp_path / "results" / "k.json"
    try:
        assert running_elsewhere(tmp_path) == {"p/k"}  # run_one takes seconds to import torch
    finally:
        slot.proc.wait(timeout=120)
        slot.log.close()
    assert running_elsewhere(tmp_path) == set()


def test_core_methods_of_every_protocol_come_before_any_variant(tmp_path: Path) -> None:
    from dataclasses import replace

    from plan import CORE, arithmetic_protocol, listops_protocol
    from run import pending_runs

    # Fresh results folders: the order must not depend on which runs are committed already.
    listops = replace(listops_protocol(), out_dir=tmp_path)
    arithmetic = replace(arithmetic_protocol(), out_dir=tmp_path)
    assert not listops.runs_dir.exists() and not arithmetic.runs_dir.exists()
    order = [(p.name, r.method.name) for p, r in pending_runs([listops, arithmetic])]
    first_variant = next(i for i, (_, m) in enumerate(order) if m not in CORE)
    assert {m for _, m in order[:first_variant]} <= set(CORE)
    assert ("arithmetic-smollm2", "base") in order[:first_variant]
    assert all(m not in CORE for _, m in order[first_variant:])


def test_gemma_runs_wait_for_every_smollm2_run_variants_included(tmp_path: Path) -> None:
    from dataclasses import replace

    from plan import PROTOCOLS_V1
    from run import pending_runs

    def fresh(protocol: Protocol) -> Protocol:
        source = protocol.lr_from
        return replace(
            protocol,
            out_dir=tmp_path,
            lr_from=replace(source, out_dir=tmp_path) if source is not None else None,
        )

    protocols = [fresh(make()) for make in PROTOCOLS_V1.values()]
    assert [p.model for p in protocols if p.tier == 1] == ["gemma-3-270m"] * 2
    order = [(p.model, r.method.name) for p, r in pending_runs(protocols)]
    first_gemma = next(i for i, (model, _) in enumerate(order) if model == "gemma-3-270m")
    assert all(model == "gemma-3-270m" for model, _ in order[first_gemma:])
    assert ("smollm2-135m-instruct", "post_block_vector") in order[:first_gemma]
    # Gemma's trained runs wait for SmolLM2's sweeps (their rates): only its baselines now.
    assert [m for _, m in order[first_gemma:]] == ["base", "base"]


@pytest.mark.parametrize("model", ["smollm2", "gemma3"])
def test_arithmetic_protocol_generates_long_enough_for_its_rationales(
    tmp_path: Path, model: str
) -> None:
    from plan import METHODS_BY_NAME, PlannedRun, arithmetic_protocol, run_config

    protocol = arithmetic_protocol(model)
    assert protocol.describe()["test_items"] == 1000
    assert protocol.describe()["validation_items"] == 200
    planned = PlannedRun("post_block-lr0.005-s0", METHODS_BY_NAME["post_block"], 5e-3, 0)
    config = run_config(protocol, planned, tmp_path)
    assert config["task"] == "arithmetic" and config["max_new_tokens"] == 80
    from steering_core.model.loading import load_tokenizer

    tokenizer = load_tokenizer(protocol.model)
    longest = max(
        len(tokenizer(json.loads(line)["completion"])["input_ids"])
        for line in protocol.test_file.read_text().splitlines()
    )
    assert longest + 1 <= config["max_new_tokens"]  # and its EOS


def test_a_protocol_without_runs_gets_no_report(tmp_path: Path) -> None:
    """Gemma's protocols wait for every SmolLM2 run: no empty report is written meanwhile."""

    root = Path(__file__).resolve().parents[2]
    command = [sys.executable, "benchmarks/quality/run.py", "--quick", "--model", "tiny-llama"]
    done = subprocess.run(
        [*command, "--report-only", "--work", str(tmp_path)],
        cwd=root,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "quick-tiny-llama: no runs yet, no report" in done.stdout
    assert not list((tmp_path / "quick").glob("results-*"))
    assert not (tmp_path / "quick" / "summary.md").exists()


@pytest.mark.slow
def test_a_restarted_orchestrator_counts_the_live_runs_of_another_against_parallel(
    tmp_path: Path,
) -> None:
    """Killing an orchestrator leaves its runs alive; its successor must not start --parallel
    more beside them (two 1-thread runs per 2 cores, not four)."""
    import time

    root = Path(__file__).resolve().parents[2]
    other = _live_run(tmp_path / "quick" / "runs" / "quick-tiny-llama" / "base-s0")
    command = [sys.executable, "benchmarks/quality/run.py", "--quick", "--model", "tiny-llama"]
    command += ["--methods", "base,post_block", "--parallel", "1", "--work", str(tmp_path)]
    orchestrator = subprocess.Popen(
        command, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        time.sleep(8)  # the other run holds the only slot: nothing may start meanwhile
        started = list((tmp_path / "quick" / "runs" / "quick-tiny-llama").glob("*/config.json"))
        assert started == []
    finally:
        other.kill()
        other.wait()
    out, _ = orchestrator.communicate(timeout=300)
    assert orchestrator.returncode == 0, out
    assert "study complete" in out
    runs = tmp_path / "quick" / "runs" / "quick-tiny-llama"
    assert sorted(p.name for p in runs.glob("*.json")) == [
        "base-s0.json",
        "post_block-lr0.002-s0.json",
    ]


def _write_runs(protocol: Protocol, records: dict[str, dict]) -> None:
    protocol.runs_dir.mkdir(parents=True, exist_ok=True)
    for key, record in records.items():
        (protocol.runs_dir / f"{key}.json").write_text(json.dumps(record))


def test_the_second_model_runs_the_core_methods_at_the_first_models_rates(
    tmp_path: Path,
) -> None:
    from dataclasses import replace

    from plan import CORE, LORA_GRID, METHODS, listops_protocol

    source = replace(listops_protocol("smollm2"), out_dir=tmp_path)
    gemma = replace(listops_protocol("gemma3"), out_dir=tmp_path, lr_from=source)
    assert listops_protocol("gemma3").lr_from == listops_protocol("smollm2")
    assert gemma.methods == CORE and gemma.describe()["lr_from"] == "listops-smollm2"

    def planned() -> list[tuple[str, str]]:
        return [(r.key, r.purpose) for r in next_runs(gemma, {}, METHODS)]

    assert planned() == [("base-s0", "baseline")]  # the rest waits for the source's sweeps
    _write_runs(
        source,
        {
            run_key("post_block", lr, 0): _result(run_key("post_block", lr, 0), acc)
            for lr, acc in zip(STEERING_GRID, (0.3, 0.5, 0.4), strict=True)
        }
        | {
            run_key("joint", lr, 0): _result(run_key("joint", lr, 0), acc)
            for lr, acc in zip(LORA_GRID, (0.6, 0.3, 0.3), strict=True)
        }
        # a variant's sweep: the second model never runs variants
        | {
            run_key("post_block_r1", lr, 0): _result(run_key("post_block_r1", lr, 0), 0.5)
            for lr in STEERING_GRID
        },
    )
    runs = next_runs(gemma, {}, METHODS)
    assert [(r.key, r.purpose) for r in runs] == [
        ("base-s0", "baseline"),
        *[(run_key("post_block", 2e-3, seed), "transfer") for seed in (0, 1, 2)],
        *[(run_key("joint", LORA_GRID[0], seed), "transfer") for seed in (0, 1, 2)],
    ]
    assert {r.steering_learning_rate for r in runs if r.method.name == "joint"} == {2e-3}
    done = {r.key: _result(r.key, 0.5) for r in runs}
    assert next_runs(gemma, done, METHODS) == []


# -- protocol v2: grids extended past a chosen edge, training with the best checkpoint kept -----


def _v2(max_extensions: int = 2) -> Protocol:
    from plan import METHODS_V2

    return Protocol(
        name="unit-v2",
        model="m",
        task="listops",
        train_file=Path("train.jsonl"),
        validation_file=Path("val.jsonl"),
        test_file=Path("test.jsonl"),
        version=2,
        method_table=METHODS_V2,
        max_extensions=max_extensions,
        n_epochs=2,
        eval_every_n_steps=25,
        keep_best_validation=True,
    )


def _v2_keys(protocol: Protocol, results: dict) -> list[str]:
    from plan import methods_of

    post_block = tuple(m for m in methods_of(protocol) if m.name == "post_block")
    return [r.key for r in next_runs(protocol, results, post_block)]


def _point(lr: float, accuracy: float, loss: float = 1.0) -> dict:
    key = run_key("post_block", lr, 0)
    return {key: _result(key, accuracy, loss)}


def test_v2_adds_a_point_beyond_the_chosen_top_edge_until_it_is_interior() -> None:
    protocol = _v2()
    results = {**_point(1e-3, 0.40), **_point(2e-3, 0.45), **_point(5e-3, 0.60)}
    assert _v2_keys(protocol, results) == [run_key("post_block", 1e-2, 0)]
    results |= _point(1e-2, 0.70)  # the new edge wins again: one more point above
    assert _v2_keys(protocol, results) == [run_key("post_block", 2e-2, 0)]
    results |= _point(2e-2, 0.55)  # 1e-2 is interior now: the other seeds run there
    assert _v2_keys(protocol, results) == [run_key("post_block", 1e-2, s) for s in (1, 2)]
    assert select(protocol.method_table[0], protocol, results).learning_rate == 1e-2


def test_v2_extends_below_and_stops_after_its_allowance() -> None:
    results = {**_point(1e-3, 0.70), **_point(2e-3, 0.50), **_point(5e-3, 0.40)}
    one = _v2(max_extensions=1)  # Gemma's allowance
    assert _v2_keys(one, results) == [run_key("post_block", 5e-4, 0)]
    results |= _point(5e-4, 0.80)  # the bottom edge again, but no second point on Gemma
    assert _v2_keys(one, results) == [run_key("post_block", 5e-4, s) for s in (1, 2)]
    assert _v2_keys(_v2(), results) == [run_key("post_block", 2e-4, 0)]


def test_v1_grids_never_extend() -> None:
    results = _sweep({1e-3: (0.40, 1.0), 2e-3: (0.45, 1.0), 5e-3: (0.60, 1.0)})
    assert _keys(("post_block",), results) == [run_key("post_block", 5e-3, s) for s in (1, 2)]


def test_v2_protocols_are_the_study_and_say_how_they_train(tmp_path: Path) -> None:
    from plan import PROTOCOLS, STUDY, PlannedRun, methods_of, run_config

    assert STUDY == ("listops-smollm2-v2", "arithmetic-smollm2-v2", "listops-gemma3-v2")
    smol, arithmetic, gemma = (PROTOCOLS[name]() for name in STUDY)
    assert [m.name for m in methods_of(smol)] == ["post_block", "full", "reft", "lora", "joint"]
    assert [m.name for m in methods_of(gemma)] == ["post_block", "full", "reft"]
    assert (smol.max_extensions, arithmetic.max_extensions, gemma.max_extensions) == (2, 2, 1)
    assert gemma.lr_from is None and gemma.tier == 1  # its own sweeps, after SmolLM2's runs
    reft = next(m for m in methods_of(smol) if m.name == "reft")
    assert reft.method == {
        "type": "reft",
        "rank": 8,
        "site": {"name": "block_output"},
        "positions": "f7+l7",
    }
    config = run_config(smol, PlannedRun("k", reft, 1e-3, 0), tmp_path)
    assert (config["n_epochs"], config["eval_every_n_steps"], config["keep_best_validation"]) == (
        2,
        25,
        True,
    )
    assert config["protocol_version"] == 2


def test_v2_arithmetic_post_block_counts_the_layer_studys_all_layers_seeds(
    tmp_path: Path,
) -> None:
    """v2's sweep chose 5e-3, the layer study's arithmetic rate; the all-layers arm is the same
    configuration, so its seeds 1 and 2 complete v2's row instead of running again."""
    import shutil
    from dataclasses import replace

    from plan import PROTOCOLS, adopt_same_runs, load_results, methods_of

    real = PROTOCOLS["arithmetic-smollm2-v2"]()
    layers = PROTOCOLS["arithmetic-smollm2-layers"]()
    # the evidence: seed 0 of both, trained separately, scores every item the same way
    v2_s0 = json.loads((real.runs_dir / "post_block-lr0.005-s0.json").read_text())
    layers_s0 = json.loads((layers.runs_dir / "all-lr0.005-s0.json").read_text())
    assert v2_s0["test_correct"] == layers_s0["test_correct"]
    assert v2_s0["validation_correct"] == layers_s0["validation_correct"]

    protocol = replace(real, out_dir=tmp_path)
    protocol.runs_dir.mkdir(parents=True)
    for path in real.runs_dir.glob("*.json"):  # the runs v2 made itself, not those it shares
        if "reused_from" not in json.loads(path.read_text()):
            shutil.copy(path, protocol.runs_dir)
    assert not (protocol.runs_dir / "post_block-lr0.005-s1.json").exists()
    adopted = adopt_same_runs(protocol, lambda name: PROTOCOLS[name]().runs_dir)
    assert adopted == [run_key("post_block", 5e-3, seed) for seed in (1, 2)]
    results = load_results(protocol.runs_dir)
    s1 = results[run_key("post_block", 5e-3, 1)]
    assert s1["reused_from"] == "arithmetic-smollm2-layers/all-lr0.005-s1"
    assert (
        s1["test_correct"]
        == json.loads((layers.runs_dir / "all-lr0.005-s1.json").read_text())["test_correct"]
    )
    post_block = [m for m in methods_of(protocol) if m.name == "post_block"]
    assert next_runs(protocol, results, tuple(post_block)) == []  # the row is complete
    # the other protocols' tables are untouched: only arithmetic's post-block shares
    listops = PROTOCOLS["listops-smollm2-v2"]()
    assert all(m.same_runs_as is None for m in methods_of(listops))


def test_a_rate_left_at_an_edge_after_the_allowance_is_named_with_the_reason() -> None:
    from plan import grid_edge

    post_block = _v2().method_table[0]
    results = {**_point(1e-3, 0.40), **_point(2e-3, 0.45), **_point(5e-3, 0.60)}
    assert grid_edge(post_block, _v2(), results) is None  # the sweep goes on above
    results |= _point(1e-2, 0.70) | _point(2e-2, 0.80)  # the top wins after both added points
    edge = grid_edge(post_block, _v2(), results)
    assert (edge.side, edge.learning_rate, edge.added) == ("top", 2e-2, 2)
    assert "at most 2 points per side" in edge.reason
    results |= _point(2e-2, 0.55)  # 1e-2 is interior now: no edge to report
    assert grid_edge(post_block, _v2(), results) is None
    assert grid_edge(post_block, PROTOCOL, _point(5e-3, 0.9)) is None  # v1: a fixed grid
