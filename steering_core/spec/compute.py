"""What a job runs on: its ranks, its devices and its DeepSpeed settings. Torch-free.

A job's ``compute`` block (API, CLI, recipes) is a :class:`ComputeRequest`; the engine reads the
same :class:`DeepSpeedSpec` in its spec and resolves ``zero_stage: "auto"`` with
:func:`resolve_zero_stage`, the one place that rule lives:

- one rank: ZeRO 0 (there is nothing to shard across);
- a method that trains only an adapter (``post_block``, ``lora``, ``reft``, ``joint``): ZeRO 0.
  Its trainable state is a fraction of a percent of the model; sharding it saves no memory that
  matters and adds collectives to every step;
- a method that trains the base weights (``full``) on several GPUs: ZeRO 2. Gradients and the
  optimizer's two moments (three quarters of the training state in fp32) are split across
  ranks, while the parameters stay whole, so the forward pass needs no gathers. ZeRO 3 also
  shards the parameters, at the price of gathering each layer's weights on every forward and
  backward; it is chosen explicitly when the model itself does not fit one device.
- the same on CPU ranks: ZeRO 0. The ranks share one machine's memory, so sharding does not
  let a bigger model fit; measured on SmolLM2-135M with 2 ranks, ZeRO 2 lowered each rank's
  training peak by about 3% and cost about 20% of the throughput.
- a stage the method cannot train under is never chosen (``joint`` with its orthogonal
  projection runs under ZeRO 0 only; see its definition).

``benchmarks/distributed/`` measures what this rule rests on (per-rank peak memory at each stage,
tokens per second of one and two ranks).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator

from steering_core.spec.method_config import StrictModel

ZeroStage = Literal[0, 1, 2, 3]
ALL_STAGES: tuple[int, ...] = (0, 1, 2, 3)
MAX_PROCESSES = 64


class DeepSpeedSpec(StrictModel):
    """Run the training loop through a DeepSpeed engine."""

    zero_stage: Literal["auto", 0, 1, 2, 3] = Field(
        default="auto", description="auto: chosen by method and world size (see the docs)"
    )
    offload_optimizer: bool = Field(default=False, description="ZeRO optimizer states on CPU.")
    offload_param: bool = Field(default=False, description="ZeRO-3 parameters on CPU.")

    @model_validator(mode="after")
    def _offload_needs_a_stage(self) -> DeepSpeedSpec:
        if self.offload_param and self.zero_stage not in ("auto", 3):
            raise ValueError(
                f"offload_param needs zero_stage 3 (got {self.zero_stage}): only ZeRO-3 "
                "partitions the parameters it would offload"
            )
        if self.offload_optimizer and self.zero_stage == 0:
            raise ValueError("offload_optimizer needs zero_stage 1, 2 or 3 (got 0)")
        return self


class ComputeRequest(StrictModel):
    """``{"gpus": N, "processes": P, "deepspeed": {...}}``: N devices, P ranks (default: one per
    GPU, or 1 for a CPU job; a CPU job may ask for several, which then talk over gloo)."""

    gpus: int = Field(default=0, ge=0, le=MAX_PROCESSES, description="GPUs (0: a CPU job)")
    processes: int | None = Field(
        default=None, ge=1, le=MAX_PROCESSES, description="ranks (default: gpus, or 1 on CPU)"
    )
    deepspeed: DeepSpeedSpec | None = Field(
        default=None, description="DeepSpeed settings; several processes always use DeepSpeed"
    )

    @model_validator(mode="after")
    def _one_rank_per_gpu(self) -> ComputeRequest:
        if self.gpus and self.processes is not None and self.processes != self.gpus:
            raise ValueError(
                f"processes={self.processes} with gpus={self.gpus}: a GPU job runs one rank "
                "per GPU; leave processes out or make it equal to gpus"
            )
        return self

    @property
    def world_size(self) -> int:
        return self.processes or max(1, self.gpus)

    @property
    def uses_deepspeed(self) -> bool:
        """Several ranks always train through DeepSpeed; one rank only when asked."""
        return self.deepspeed is not None or self.world_size > 1

    def deepspeed_spec(self) -> DeepSpeedSpec | None:
        """The engine's ``deepspeed`` block for this request (None: plain torch)."""
        if not self.uses_deepspeed:
            return None
        return self.deepspeed or DeepSpeedSpec()

    def normalised(self) -> dict[str, Any]:
        """What the registry stores: every field explicit."""
        spec = self.deepspeed_spec()
        return {
            "gpus": self.gpus,
            "processes": self.world_size,
            "deepspeed": None if spec is None else spec.model_dump(mode="json"),
        }


def resolve_zero_stage(
    spec: DeepSpeedSpec,
    *,
    world_size: int,
    trains_base_weights: bool,
    on_gpus: bool = True,
    allowed: tuple[int, ...] = ALL_STAGES,
) -> int:
    """The ZeRO stage a run uses (the ``auto`` rule is in the module docstring; offloading
    parameters needs ZeRO 3, offloading the optimizer at least ZeRO 1, so ``auto`` with either
    picks 3 or 2). An explicit stage is returned as asked; the method's own check refuses one it
    cannot train under."""
    if spec.zero_stage != "auto":
        return int(spec.zero_stage)
    if spec.offload_param:
        return 3
    shards_state = trains_base_weights and world_size > 1 and on_gpus
    preferred = 2 if shards_state or spec.offload_optimizer else 0
    return preferred if preferred in allowed else 0
