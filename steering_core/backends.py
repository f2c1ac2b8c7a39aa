"""The two ways one training loop drives the model: plain torch, or a DeepSpeed engine.

Both expose the same steps (forward+backward of a micro-batch, optimizer step, eval forward,
checkpoint state), so ``train.py`` has one loop and DeepSpeed is a branch, not a second trainer.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from steering_core.checkpoint import load_optimizer, save_optimizer
from steering_core.loss import causal_lm_loss
from steering_core.spec import DeepSpeedSpec, ResolvedHyperparameters

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

    def _autocast(self):
        device = next(self.model.parameters()).device.type
        return torch.autocast(
            device, dtype=self.autocast_dtype, enabled=self.autocast_dtype is not None
        )

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        with self._autocast():
            return self.loss(self.model, batch)

    def forward_backward(self, batch: dict[str, torch.Tensor]) -> float:
        loss = self.forward(batch)
        (loss / self.hp.gradient_accumulation_steps).backward()
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


def deepspeed_config(
    spec: DeepSpeedSpec, hp: ResolvedHyperparameters, bf16: bool
) -> dict[str, Any]:
    zero: dict[str, Any] = {"stage": spec.zero_stage}
    if spec.offload_optimizer:
        zero["offload_optimizer"] = {"device": "cpu"}
    if spec.offload_param:
        zero["offload_param"] = {"device": "cpu"}
    return {
        "train_micro_batch_size_per_gpu": hp.batch_size,
        "gradient_accumulation_steps": hp.gradient_accumulation_steps,
        "gradient_clipping": hp.max_grad_norm,
        "zero_optimization": zero,
        "bf16": {"enabled": bf16},
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
    ):
        import deepspeed

        if not torch.distributed.is_initialized():
            deepspeed.init_distributed(dist_backend="nccl" if torch.cuda.is_available() else "gloo")
        self.config = config
        self.engine, self.optimizer, _, self.scheduler = deepspeed.initialize(
            model=model, optimizer=optimizer, lr_scheduler=scheduler, config=config
        )
        self.hp, self.loss = hp, loss

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.loss(self.engine, batch)

    def forward_backward(self, batch: dict[str, torch.Tensor]) -> float:
        loss = self.forward(batch)
        self.engine.backward(loss)  # scales by 1/gradient_accumulation_steps itself
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
