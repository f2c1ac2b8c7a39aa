"""``results.md`` of the distributed benchmark, from its ``results.json``."""

from __future__ import annotations

import statistics
from typing import Any

MIB = 2**20
RETURNED = "; freed memory returned"


def mib(value: float | None) -> str:
    return "-" if value is None else f"{value:,.0f}"


def render(r: dict[str, Any]) -> str:
    lines = [
        "# Distributed training on CPU: memory per rank at each ZeRO stage, 1 rank against 2",
        "",
        f"Model `{r['model']}`, data `{r['train_file']}`, global batch {r['global_batch']} rows "
        f"(split across the ranks) of at most {r['max_seq_length']} tokens, one micro-batch per "
        f"step, fp32 (the engine's regime on CPU). Launched {r['launch']}. Raw numbers: "
        "`results.json`.",
        "",
    ]
    if "memory" in r:
        lines += render_memory(r["memory"])
    if "speed" in r:
        lines += render_speed(r["speed"])
    if "memory" in r and "speed" in r:
        lines += reading(r["memory"]["runs"], r["speed"]["methods"])
    return "\n".join(lines) + "\n"


def provenance(p: dict[str, Any]) -> str:
    changes = sorted({line.split()[-1] for line in p["engine_changes"]})
    engine = "the engine as committed" if not changes else f"local changes to {', '.join(changes)}"
    if p.get("engine_changed_during_run"):
        engine += (
            f"; HEAD reached `{p['commit_at_end'][:10]}` during the run, changing "
            f"{', '.join(p['engine_changed_during_run'])}"
        )
    return (
        f"`{p['command']}` on {p['date']}, commit `{p['commit'][:10]}` ({engine}), "
        f"{p['seconds'] / 60:.1f} min under the timing lock. {p['machine']}; Python "
        f"{p['python']}, torch {p['versions']['torch']}, DeepSpeed {p['versions']['deepspeed']}, "
        f"transformers {p['versions']['transformers']}."
    )


def backend_label(run: dict[str, Any]) -> str:
    if run["backend"] != "deepspeed":
        return "torch"
    return f"DeepSpeed ZeRO {run['zero_stage']}" + (
        " (auto)" if run["requested_zero_stage"] in ("auto", None) else ""
    )


def memory_rows(runs: dict[str, dict[str, Any]]) -> list[str]:
    rows = []
    for name, run in runs.items():
        state = run["analytic_state_bytes"]
        parts = " + ".join(
            f"{state[k] / MIB:,.0f}" for k in ("weights", "gradients", "adam_moments")
        )
        for rank, m in run["memory_mib"].items():
            census = (run.get("census") or {}).get(rank, {})
            resident = census.get("live_tensor_resident_bytes")
            rows.append(
                f"| {name.removesuffix(RETURNED)} | {backend_label(run)} | {rank} | "
                f"{mib(m['load_and_init_peak'])} | {mib(m['after_init'])} | "
                f"**{mib(m['training_peak'])}** | {mib(m['training_growth'])} | "
                f"{mib(None if resident is None else resident / MIB)} | "
                f"{state['total'] / MIB:,.0f} = {parts} |"
            )
    return rows


MEMORY_HEADER = [
    "| configuration | backend | rank | load+init peak | after init | training peak | growth "
    "in training | live tensors | ZeRO accounting: weights + grads + Adam |",
    "|---|---|---|---|---|---|---|---|---|",
]


def render_memory(memory: dict[str, Any]) -> list[str]:
    runs = memory["runs"]
    default = {k: v for k, v in runs.items() if not k.endswith(RETURNED)}
    returned = {k: v for k, v in runs.items() if k.endswith(RETURNED)}
    buckets = ", ".join(f"`{k}` {v:,}" for k, v in memory["scaled_buckets"].items())
    lines = [
        "## Memory per rank",
        "",
        provenance(memory["provenance"]),
        "",
        f"Each configuration ran {memory['steps']} steps; MiB per rank process. From "
        "`/proc/<pid>/status`: *load+init peak* is `VmHWM` when rank 0 reports `start` (model "
        "loaded on every rank, DeepSpeed's engine built); *after init* is `VmRSS` then; "
        "`VmHWM` is reset there (`clear_refs` 5) and *training peak* is the last `VmHWM` read "
        "at a `step` event, the peak of training alone; *growth* is training peak minus after "
        "init. *Live tensors*: what the rank holds in tensors just before its second optimizer "
        "update (every live tensor, its gradient and its ZeRO-3 partition, distinct storages, "
        "pages in RAM; `rank_probe.py`). *ZeRO accounting*: the training state the stage "
        "leaves each rank by ZeRO's design in fp32 (weights 4 B per parameter, sharded at "
        "ZeRO 3; gradients of the trained parameters 4 B, sharded at ZeRO 2-3; Adam's moments "
        "8 B, sharded at ZeRO 1-3).",
        "",
        "### As the worker runs them (glibc's default allocator)",
        "",
        *MEMORY_HEADER,
        *memory_rows(default),
        "",
        f"*Scaled buckets* (an experiment, not the engine's config): {buckets} merged into "
        "`zero_optimization` by `rank_probe.py`; DeepSpeed's defaults (500M elements, 1e9 "
        "live parameters) exceed this model.",
        "",
        "### With freed memory returned to the system",
        "",
        f"The same runs under {memory['allocator_returning_freed_memory']}: glibc's default "
        "keeps freed blocks below an adaptive threshold for reuse, so RSS stays at the "
        "high-water mark of everything the rank ever held; here each tensor-sized block is "
        "unmapped when freed, so RSS follows what the rank holds.",
        "",
        *MEMORY_HEADER,
        *memory_rows(returned),
        "",
        "### What each rank holds (rank 0, before its second optimizer update)",
        "",
        "| configuration | live tensors | AdamW's parameters | their grads | Adam moments | "
        "module parameters | ZeRO-3 partitions | largest buffers (MiB in RAM, holder) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, run in default.items():
        census = (run.get("census") or {}).get("0")
        if not census:
            continue
        largest = "; ".join(
            f"{s['resident_mib']:,.0f}"
            + (f" of {s['mib']:,.0f}" if s["mib"] > s["resident_mib"] + 1 else "")
            + f" {holder(s)}"
            for s in census["largest_storages"]
            if s["mib"] >= 100
        )
        lines.append(
            f"| {name} | {census['live_tensor_resident_bytes'] / MIB:,.0f} | "
            f"{census['optimizer_parameter_bytes'] / MIB:,.0f} | "
            f"{census['optimizer_gradient_bytes'] / MIB:,.0f} | "
            f"{census['optimizer_state_bytes'] / MIB:,.0f} | "
            f"{census['module_parameter_bytes'] / MIB:,.0f} | "
            f"{census['zero3_partition_bytes'] / MIB:,.0f} | {largest or '-'} |"
        )
    failed = [n for n, run in runs.items() if run.get("exit_code")]
    lines.append("")
    if failed:
        lines += [
            "Runs that measured every step but then failed: "
            + "; ".join(f"{n} ({runs[n]['error_after_training'][:160]})" for n in failed),
            "",
        ]
    return lines


def holder(storage: dict[str, Any]) -> str:
    """What holds a buffer; its dtype and shape where the probe found no holder (a frozen
    weight the optimizer does not see)."""
    if storage["held_by"] == "?":
        return f"{storage['dtype']} {storage['shape']} (not the optimizer's)"
    return storage["held_by"].replace("DeepSpeedZeroOptimizer", "Zero")


def render_speed(speed: dict[str, Any]) -> list[str]:
    steps = ", ".join(f"{m} {n}" for m, n in speed["steps"].items())
    lines = [
        "## Tokens/s: 1 rank against 2 ranks",
        "",
        provenance(speed["provenance"]),
        "",
        f"{speed['rounds']} rounds; a round runs each configuration of a method once, in the "
        f"order of the table (interleaved: 1 rank, 2 ranks, ..., 1 rank, 2 ranks, ...); steps "
        f"per run: {steps}. A run's figure is the median of its steps' tokens/s (every rank's "
        "tokens of the step over its wall time) after the first step; the ratio is taken per "
        "round against that round's 1-rank run. A run during which other processes took more "
        f"than {speed['other_cpu_limit']:.0%} of the machine's CPU time was run again (at most "
        "twice; each run waited for a quiet machine first: only the quality study honours the "
        "timing lock). Every configuration of a method trains the same rows (same spec, same "
        "trained tokens).",
        "",
        "| configuration | backend | threads per rank | tokens/s, median of rounds | ratio to "
        "1 rank, median | range | per round |",
        "|---|---|---|---|---|---|---|",
    ]
    for method in speed["methods"].values():
        for name, arm in method["arms"].items():
            backend = "torch" if arm["backend"] != "deepspeed" else f"ZeRO {arm['zero_stage']}"
            ratio = (
                ("-", "-", "-")
                if "ratio_median" not in arm
                else (
                    f"**{arm['ratio_median']:.3f}**",
                    f"{arm['ratio_min']:.3f}-{arm['ratio_max']:.3f}",
                    ", ".join(f"{x:.3f}" for x in arm["ratio_per_round"]),
                )
            )
            lines.append(
                f"| {name} | {backend} | {arm['threads_per_rank']} | "
                f"{arm['tokens_per_second_median']} | {' | '.join(ratio)} |"
            )
    lines.append("")
    return lines


def peak(runs: dict[str, Any], name: str) -> float:
    """The highest training peak of the configuration's ranks, MiB."""
    return max(m["training_peak"] for m in runs[name]["memory_mib"].values())


def total(runs: dict[str, Any], name: str) -> float:
    """The configuration's training peaks summed over its ranks (what the machine holds)."""
    return sum(m["training_peak"] for m in runs[name]["memory_mib"].values())


def low(runs: dict[str, Any], name: str) -> float:
    return min(m["training_peak"] for m in runs[name]["memory_mib"].values())


def after_init(runs: dict[str, Any], name: str) -> float:
    return max(m["after_init"] for m in runs[name]["memory_mib"].values())


def live(runs: dict[str, Any], name: str) -> float:
    return runs[name]["census"]["0"]["live_tensor_resident_bytes"] / MIB


def change(new: float, old: float) -> str:
    return f"{100 * (new / old - 1):+.0f}%"


def reading(runs: dict[str, Any], speed: dict[str, Any]) -> list[str]:
    """The reading of this machine's numbers; every figure comes from the results."""
    z = {k: f"full, 2 ranks, ZeRO {k}" for k in ("0", "1", "2", "3")}
    z3s = "full, 2 ranks, ZeRO 3, scaled buckets"
    back = {k: f"{v}{RETURNED}" for k, v in {**z, "3s": z3s, "1r": "full, 1 rank, torch"}.items()}
    one = "full, 1 rank, torch"
    pb = {
        "torch": "post_block, 1 rank, torch",
        "ds1": "post_block, 1 rank, DeepSpeed ZeRO 0",
        "auto": "post_block, 2 ranks, ZeRO auto",
        "z2": "post_block, 2 ranks, ZeRO 2",
    }
    s3 = runs[z["3"]]["census"]["0"]
    bucket = next(b for b in s3["largest_storages"] if "ipg_buckets" in b["held_by"])
    pb_speed, full_speed = speed["post_block"]["arms"], speed["full"]["arms"]
    pb_auto, pb_z2 = (
        pb_speed["post_block, 2 ranks, ZeRO auto"],
        pb_speed["post_block, 2 ranks, ZeRO 2"],
    )
    full_auto, full_z0 = full_speed["full, 2 ranks, ZeRO auto"], full_speed["full, 2 ranks, ZeRO 0"]
    z2_over_z0 = [
        a / b
        for a, b in zip(
            full_auto["tokens_per_second_per_round"],
            full_z0["tokens_per_second_per_round"],
            strict=True,
        )
    ]
    z2_over_z0.sort()
    trainable = runs[pb["auto"]]["trainable_parameters"]
    params = runs[one]["parameters"]
    weights = 4 * params / MIB  # fp32 weights; a ZeRO partition on 2 ranks is half of it
    adapter_state = 16 * trainable / MIB  # weights, gradients, two moments
    live_saving = change(live(runs, z["2"]), live(runs, z["0"]))
    z3_excess = change(peak(runs, z["3"]), peak(runs, z["0"]))
    return [
        "## Reading",
        "",
        "**One machine, one RAM.** The ranks of a CPU job share the machine's memory, so what "
        f"the machine pays is the sum over ranks: full fine-tuning on 2 ranks under ZeRO 2 "
        f"peaks at {total(runs, z['2']):,.0f} MiB in all against {peak(runs, one):,.0f} "
        f"MiB for 1 rank, post_block at {total(runs, pb['auto']):,.0f} against "
        f"{peak(runs, pb['torch']):,.0f}. ZeRO shrinks what each rank holds, which is what "
        "counts where each rank has its own device (a GPU job); on one CPU host it cannot make "
        "a model fit that one rank could not hold.",
        "",
        "**What each stage leaves a rank** (live tensors at the update, full fine-tuning, "
        f"{params / 1e6:.1f}M parameters): ZeRO 0 {live(runs, z['0']):,.0f} MiB, exactly 1 rank's "
        f"({live(runs, one):,.0f}: weights, gradients, two moments). ZeRO 1 and 2 "
        f"{live(runs, z['1']):,.0f} / {live(runs, z['2']):,.0f} ({live_saving}): "
        "each rank keeps half the moments and half the gradient, and DeepSpeed adds a "
        f"{weights / 2:,.0f} MiB "
        "fp32 copy of the rank's partition (it clones its master weights even when the model "
        "is fp32 already). DeepSpeed 0.19's ZeRO 1 also keeps only the partition's gradient by "
        "the time of the update, and the whole gradient of this model fits one default reduce "
        "bucket, so 1 and 2 hold the same here. ZeRO 3 does shard the weights: the module's "
        f"parameters hold 0 bytes and each rank a {s3['zero3_partition_bytes'] / MIB:,.0f} MiB "
        "partition; but DeepSpeed keeps six partition-sized buffers (the partition, its fp32 "
        "copy, a gradient partition buffer, the optimizer's gradient, two moments), "
        f"{live(runs, z3s):,.0f} MiB, no less than ZeRO 2 on 2 ranks, plus a reduce bucket "
        f"of {bucket['mib']:,.0f} MiB (DeepSpeed's default 500M elements) of which "
        f"{bucket['resident_mib']:,.0f} MiB, the whole gradient, is in RAM: "
        f"{live(runs, z['3']):,.0f} MiB in all.",
        "",
        "**Peaks as the worker runs them.** ZeRO 1 and 2 peak at "
        f"{peak(runs, z['1']):,.0f} and {peak(runs, z['2']):,.0f} MiB per rank against ZeRO 0's "
        f"{peak(runs, z['0']):,.0f} ({change(peak(runs, z['2']), peak(runs, z['0']))}): "
        "activations and the allocator's kept memory dwarf the state they save. ZeRO 3 peaks "
        f"highest, {peak(runs, z['3']):,.0f} MiB ({z3_excess}): "
        "DeepSpeed's default limits on live gathered parameters and their reuse distance "
        "(1e9 parameters each) exceed the model, so gathered layers need not be released "
        "between the forward and the backward pass, and the whole gradient collects in the "
        "500M-element bucket. Buckets and limits sized to the model (5M elements) bring it to "
        f"{peak(runs, z3s):,.0f} MiB, still above ZeRO 0: glibc keeps what ZeRO 3 frees. Every "
        "rank loads the whole model before DeepSpeed partitions it (the engine builds the model "
        "unpartitioned, then hands it to `deepspeed.initialize`), and ZeRO 3's RSS after init, "
        f"{after_init(runs, z['3']):,.0f} MiB, still holds that copy although the rank keeps "
        f"only a partition (ZeRO 0: {after_init(runs, z['0']):,.0f} MiB).",
        "",
        "**Sharding in RSS, shown honestly.** With freed blocks returned to the system "
        "(second table), RSS follows what a rank holds, and ZeRO 3 with scaled buckets peaks "
        f"lowest: {peak(runs, back['3s']):,.0f} MiB per rank against "
        f"{peak(runs, back['2']):,.0f} (ZeRO 2), {peak(runs, back['0']):,.0f} (ZeRO 0) and "
        f"{peak(runs, back['1r']):,.0f} (1 rank) "
        f"({change(peak(runs, back['3s']), peak(runs, back['0']))} against ZeRO 0); with "
        f"DeepSpeed's default buckets it is {peak(runs, back['3']):,.0f} "
        f"({change(peak(runs, back['3']), peak(runs, back['0']))}). The sharding is real "
        "(the tensor count shows it in both runs); the measured peak shows it only when the "
        "allocator gives freed memory back and DeepSpeed's buffers are sized to the model.",
        "",
        f"**post_block** trains {trainable:,} parameters ({adapter_state:,.0f} MiB of weights, "
        f"gradients and moments), beside {weights:,.0f} MiB of frozen weights on every rank. "
        "DeepSpeed on 1 rank costs "
        f"nothing measurable over plain torch (peak {peak(runs, pb['ds1']):,.0f} against "
        f"{peak(runs, pb['torch']):,.0f} MiB). On 2 ranks each rank starts higher "
        f"({after_init(runs, pb['auto']):,.0f} MiB after init against "
        f"{after_init(runs, pb['torch']):,.0f}) and grows less in training (half the batch). "
        f"ZeRO 2 would save {adapter_state / 4:,.0f} MiB of moments per rank; its peak, "
        f"{peak(runs, pb['z2']):,.0f} MiB, lies within the spread of ZeRO 0's ranks "
        f"({low(runs, pb['auto']):,.0f}-{peak(runs, pb['auto']):,.0f}).",
        "",
        "**Tokens/s on 2 cores.** One rank with both cores as intra-op threads against two "
        "ranks with one core each: the same arithmetic on the same two cores, plus the ranks' "
        "collectives, so no gain is to be expected. post_block: "
        f"{pb_auto['ratio_median']:.3f} ({pb_auto['ratio_min']:.3f}-"
        f"{pb_auto['ratio_max']:.3f}), parity: the range straddles 1; its all-reduce moves "
        f"{adapter_state / 4:,.0f} MiB a step, and splitting the batch across processes "
        "parallelises these small "
        "matrix products at least as well as two intra-op threads do. Full fine-tuning: "
        f"{full_auto['ratio_median']:.3f} ({full_auto['ratio_min']:.3f}-"
        f"{full_auto['ratio_max']:.3f}) under ZeRO 2, {full_z0['ratio_median']:.3f} "
        f"({full_z0['ratio_min']:.3f}-{full_z0['ratio_max']:.3f}) under ZeRO 0: every step "
        f"moves the {weights:,.0f} MiB gradient through gloo (ZeRO 2 reduce-scatters it and "
        "all-gathers "
        "the updated partitions, ZeRO 0 all-reduces it), and ZeRO 2 runs at "
        f"{statistics.median(z2_over_z0):.2f} ({z2_over_z0[0]:.2f}-{z2_over_z0[-1]:.2f}) of "
        "ZeRO 0's tokens/s here. What this shows is that the distributed path runs, on the "
        "same rows to the same trained tokens, and what it costs on CPU; on GPUs each rank "
        "has its own device and NCCL, and the comparison is another one.",
        "",
        "**The auto rule** (`steering_core/spec/compute.py`): *adapter methods: ZeRO 0* holds: "
        f"sharding post_block's {adapter_state:,.0f} MiB saves nothing that shows, and ZeRO 2 "
        "ran at "
        f"{pb_z2['ratio_median']:.3f} of 1 rank against {pb_auto['ratio_median']:.3f} for ZeRO "
        "0, within noise. *Full fine-tuning on 2+ ranks: ZeRO 2* is the stage that lowers "
        "what each rank holds (a quarter of the live state, a few percent of the peak here) "
        "without gathering weights; ZeRO 1 is the same at this size; ZeRO 3 with the engine's "
        "DeepSpeed settings holds as much as ZeRO 0 and peaks higher. Its price on this CPU "
        "machine is the throughput above: on one CPU host, where ZeRO 2 lowers the machine's "
        f"total by {total(runs, z['0']) - total(runs, z['2']):,.0f} MiB for "
        f"{100 * (1 - statistics.median(z2_over_z0)):.0f}% of the tokens/s, ZeRO 0 would be "
        "the better trade for a CPU job, and 2 ranks of full fine-tuning are slower than 1 at "
        "either stage. Two things for ZeRO 3 "
        '("chosen when the model does not fit one device"): the engine passes DeepSpeed no '
        "bucket or live-parameter sizes, so for a model under 1e9 parameters DeepSpeed's "
        "defaults let it keep gathered layers through the step and collect the whole gradient "
        f"in one bucket ({z3_excess} at the peak here); and every rank first loads (on a GPU, "
        "moves to its device) the whole fp32 model before DeepSpeed partitions it "
        "(`steering_core/engine/train.py`), so a model that does not fit one device cannot start "
        "(`deepspeed.zero.Init` around the load would be needed). Not measured here: GPUs, "
        "more than 2 ranks, larger models.",
        "",
    ]
