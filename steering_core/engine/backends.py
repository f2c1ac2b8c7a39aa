"""The two ways one training loop drives the model: plain torch, or a DeepSpeed engine.

Both expose the same steps (forward+backward of a micro-batch, optimizer step, eval forward,
checkpoint state), so ``train.py`` has one loop and DeepSpeed is a branch, not a second trainer.

Precision is one regime for every method and both backends: weights, gradients and optimizer
state in fp32, and, where the run is bf16, the forward pass under bf16 autocast. Matrix
products then run in bf16 while the residual stream stays fp32 (an fp32 hidden state plus a
bf16 block output is fp32), so a steering shift smaller than bf16's spacing at the residual's
magnitude (0.5 at 64-128) still moves it. DeepSpeed's own ``bf16`` mode would cast every
parameter to bf16, so it stays off and the backend applies the same autocast itself.

``forward_backward(batch, weight)`` back-propagates ``weight`` times the micro-batch's mean loss;
the loop sets ``weight`` so that a step's gradient is that of the mean over all the labelled
tokens of the step, across micro-batches and ranks (see ``train.py``).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from steering_core.engine.checkpoint import load_optimizer, save_optimizer
from steering_core.methods.loss import causal_lm_loss
from steering_core.spec.training_spec import ResolvedHyperparameters

# (forward, batch) -> scalar loss: the method handler's ``loss``.
LossFunction = Callable[[Callable[..., Any], Mapping[str, torch.Tensor]], torch.Tensor]


class TorchBackend:
    name = "torch"

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        hp: ResolvedHyperparameters,
        autocast_dtype: torch.dtype | None,
        loss: LossFunction = causal_lm_loss,
    ):
        self.model, self.optimizer, self.scheduler, self.hp = model, optimizer, scheduler, hp
        self.loss = loss
        self.autocast_dtype = autocast_dtype
        self.params = [p for g in optimizer.param_groups for p in g["params"]]

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(self.model, self.autocast_dtype):
            return self.loss(self.model, batch)

    def forward_backward(self, batch: dict[str, torch.Tensor], weight: float = 1.0) -> float:
        loss = self.forward(batch)
        (loss * weight).backward()
        return float(loss.detach())

    def step(self) -> float | None:
        norm = torch.nn.utils.clip_grad_norm_(self.params, self.hp.max_grad_norm)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        return float(norm)

    def learning_rate(self) -> float:
        return float(self.scheduler.get_last_lr()[0])

    def train(self) -> None:
        self.model.train()

    def eval(self) -> None:
        self.model.eval()

    def save_state(self, directory: Path) -> dict[str, Any]:
        save_optimizer(self.optimizer, directory)
        return {"scheduler": self.scheduler.state_dict()}

    def load_state(self, directory: Path, state: dict[str, Any]) -> None:
        load_optimizer(self.optimizer, directory)
        self.scheduler.load_state_dict(state["scheduler"])

    def load_schedule(self, state: dict[str, Any]) -> None:
        """Continue the learning-rate schedule at the checkpoint's step, with fresh optimizer
        moments (a checkpoint written under another layout)."""
        fast_forward(self.scheduler, int(state["step"]))


def fast_forward(scheduler: Any, steps: int) -> None:
    """Advance a LambdaLR to optimizer step ``steps`` without stepping the optimizer."""
    scheduler.last_epoch = steps - 1
    scheduler.step()


def autocast(model: torch.nn.Module, dtype: torch.dtype | None):
    """bf16 autocast on the model's device when ``dtype`` is set; a no-op otherwise."""
    device = next(model.parameters()).device.type
    return torch.autocast(device, dtype=dtype, enabled=dtype is not None)


def deepspeed_config(
    *,
    zero_stage: int,
    offload_optimizer: bool,
    offload_param: bool,
    hp: ResolvedHyperparameters,
    per_rank_batch: int,
    hidden_size: int | None = None,
) -> dict[str, Any]:
    """The engine's config: fp32 throughout (bf16 comes from autocast, see the module
    docstring), ``per_rank_batch`` rows per rank per micro-batch. Under ZeRO 3 the buckets are
    sized to the model as transformers' DeepSpeed integration sizes its ``auto`` values (H² for
    the reduce bucket, 0.9·H² for prefetching, parameters under 10·H kept whole): DeepSpeed's
    defaults (5e8 elements) are larger than a small model, and their buffers made ZeRO 3 hold
    more per rank than ZeRO 0 (``benchmarks/distributed/``)."""
    zero: dict[str, Any] = {"stage": zero_stage}
    if zero_stage == 3 and hidden_size:
        zero.update(
            reduce_bucket_size=hidden_size * hidden_size,
            stage3_prefetch_bucket_size=int(0.9 * hidden_size * hidden_size),
            stage3_param_persistence_threshold=10 * hidden_size,
        )
    if offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if offload_param:
        zero["offload_param"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": per_rank_batch,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "gradient_clipping": hp.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "zero_allow_untested_optimizer": True,
        # Keep our torch AdamW under offload too (DeepSpeedCPUAdam would change the numerics).
        "zero_force_ds_cpu_optimizer": False,
        "steps_per_print": 10**9,
        "wall_clock_breakdown": False,
    }


class DeepSpeedBackend:
    name = "deepspeed"

    def __init__(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LambdaLR,
        hp: ResolvedHyperparameters,
        config: dict[str, Any],
        loss: LossFunction = causal_lm_loss,
        autocast_dtype: torch.dtype | None = None,
        collective_timeout_seconds: float = 600.0,
    ):
        import deepspeed

        if not torch.distributed.is_initialized():
            deepspeed.init_distributed(
                dist_backend="nccl" if torch.cuda.is_available() else "gloo",
                timeout=timedelta(seconds=collective_timeout_seconds),
            )
        self.config = config
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        self.hp, self.loss, self.autocast_dtype = hp, loss, autocast_dtype

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with autocast(self.engine.module, self.autocast_dtype):
            return self.loss(self.engine, batch)

    def forward_backward(self, batch: dict[str, torch.Tensor], weight: float = 1.0) -> float:
        loss = self.forward(batch)
        # The loop's weight already accounts for accumulation: no 1/gradient_accumulation_steps.
        self.engine.backward(loss * weight, scale_wrt_gas=False)
        self.engine.step()  # steps optimizer and scheduler only at accumulation boundaries
        return float(loss.detach())

    def step(self) -> float | None:
        norm = self.engine.get_global_grad_norm()
        return None if norm is None else float(norm)

    def learning_rate(self) -> float:
        return float(self.engine.get_lr()[0])

    def train(self) -> None:
        self.engine.train()

    def eval(self) -> None:
        self.engine.eval()

    def save_state(self, directory: Path) -> dict[str, Any]:
        self.engine.save_checkpoint(
            str(directory / "deepspeed"), tag="state", exclude_frozen_parameters=True
        )
        return {}

    def load_schedule(self, state: dict[str, Any]) -> None:
        fast_forward(self.scheduler, int(state["step"]))

    def load_state(self, directory: Path, state: dict[str, Any]) -> None:
        self.engine.load_checkpoint(
            str(directory / "deepspeed"),
            tag="state",
            load_module_strict=False,
            load_optimizer_states=True,
            load_lr_scheduler_states=True,
        )

    @staticmethod
    def discard(directory: Path) -> None:
        shutil.rmtree(directory / "deepspeed", ignore_errors=True)
