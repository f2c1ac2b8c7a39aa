"""The distillation study's runs: one process trains a source, scores it, distils it into a
post-block adapter and scores that; the report makes the source a row of its own and judges
the student against it. Real training of the tiny model."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from plan import (
    DISTILL_COMPARISONS,
    METHODS_DISTILL,
    PROTOCOLS,
    PlannedRun,
    adopt_same_runs,
    load_results,
    next_runs,
    quick_protocol,
    run_config,
    run_key,
)
from report import build
from run_one import RunConfig, run


def test_a_distill_run_trains_its_source_first_and_the_report_pairs_them(
    tmp_path: Path,
) -> None:
    methods = tuple(m for m in METHODS_DISTILL if m.name in ("distill_lora", "lora_source"))
    protocol = replace(
        quick_protocol("tiny-llama", tmp_path),
        name="quick-distill",
        quick=False,  # judged, as the study is
        study="distill",
        method_table=methods,
        comparisons=DISTILL_COMPARISONS,
    )
    (planned,) = next_runs(protocol, {}, methods)  # the source row is never run on its own
    assert planned.key == run_key("distill_lora", 2e-3, 0)
    config = run_config(protocol, planned, tmp_path / "work")
    assert config["source"] == {"method": {"type": "lora"}, "learning_rate": 1.5e-3}
    result = run(RunConfig.model_validate({**config, "torch_threads": 1}))
    source = result.source
    assert source is not None and source["trainable_parameters"] > 0
    assert source["trainable_parameters"] != result.trainable_parameters  # LoRA vs post-block
    assert len(source["test_correct"]) == len(result.test_correct) == 64
    assert result.final_loss is not None and result.final_loss < result.first_loss
    assert not (tmp_path / "work").exists()  # no artifact outlives its run

    record = json.loads(result.model_dump_json())
    report = build(protocol, {record["key"]: record}, "test")
    rows = {m["method"]: m for m in report["methods"]}
    assert set(rows) == {"distill_lora", "lora_source"}
    assert rows["lora_source"]["test_accuracy_per_seed"] == [
        round(100 * source["test_accuracy"], 2)
    ]
    (paired,) = [t for t in report["comparisons"] if t["b"] == "lora_source"]
    assert paired["a"] == "distill_lora" and paired["pairs"] == 64
    assert report["targets"][0].startswith("post-block distilled from LoRA reaches 90%")
    assert report["runs_done"] == 1


def test_the_study_shares_post_block_with_protocol_v2(tmp_path: Path) -> None:
    protocol = replace(PROTOCOLS["listops-smollm2-distill"](), out_dir=tmp_path)
    adopted = adopt_same_runs(protocol, lambda name: PROTOCOLS[name]().runs_dir)
    assert adopted == [run_key("post_block", 2e-3, seed) for seed in (0, 1, 2)]
    planned = next_runs(protocol, load_results(protocol.runs_dir), protocol.method_table)
    assert [p.key for p in planned] == ["distill_lora-lr0.002-s0", "distill_full-lr0.002-s0"]
    assert all(isinstance(p, PlannedRun) for p in planned)
