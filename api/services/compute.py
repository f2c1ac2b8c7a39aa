"""A job's ``compute`` block at creation: the ``gpus`` shorthand folded in, and the checks that
need the method and its hyperparameters (the ZeRO stage it trains under, the global batch split
across ranks). The block's own rules are :class:`steering_core.spec.compute.ComputeRequest`'s."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from api.errors import ApiError, error_param
from api.schemas import JobCreate
from steering_core.errors import ConfigValidationError
from steering_core.methods.registry import method_definition
from steering_core.spec.compute import ComputeRequest, resolve_zero_stage
from steering_core.spec.training_spec import Hyperparameters


def compute_request(body: JobCreate) -> ComputeRequest:
    """The job's compute request: ``compute`` as given, with the top-level ``gpus`` (a
    shorthand for ``compute.gpus``) filled in where ``compute`` leaves it out; both given and
    different is a 400 on ``gpus``."""
    gpus_given = "gpus" in body.model_fields_set
    if body.compute is None:
        return ComputeRequest(gpus=body.gpus)
    if not gpus_given or "gpus" in body.compute.model_fields_set:
        if gpus_given and body.gpus != body.compute.gpus:
            raise ApiError(
                400,
                f"gpus={body.gpus} disagrees with compute.gpus={body.compute.gpus}: gpus is "
                "a shorthand for compute.gpus; give one of them, or the same number",
                param="gpus",
            )
        return body.compute
    try:
        return ComputeRequest.model_validate(
            {**body.compute.model_dump(exclude_unset=True), "gpus": body.gpus}
        )
    except ValidationError as exc:
        error = exc.errors()[0]
        param = error_param(error)
        raise ApiError(
            400,
            f"Invalid compute (with gpus={body.gpus}): {error['msg']}",
            param=f"compute.{param}" if param else "compute",
        ) from exc


def check_compute(method: Any, hyperparameters: Hyperparameters, compute: ComputeRequest) -> None:
    """Refuse a ZeRO stage the method cannot train under, and a global batch that does not
    split evenly across the ranks (an ``"auto"`` one is chosen as a multiple of them)."""
    prefix = f"method.{method.type}"
    world = compute.world_size
    batch = hyperparameters.batch_size
    if batch != "auto" and batch % world:
        lower, upper = batch - batch % world, batch + world - batch % world
        options = f"{lower} or {upper}" if lower else str(upper)
        raise ApiError(
            400,
            f"batch_size {batch} is the global batch, split evenly across the job's {world} "
            f"processes (ranks), and {batch} is not divisible by {world}: use a multiple of "
            f"{world} (e.g. {options}), or change compute.processes",
            param=f"{prefix}.hyperparameters.batch_size",
        )
    spec = compute.deepspeed_spec()
    if spec is None:
        return
    definition = method_definition(method.type)
    if spec.zero_stage != "auto":
        try:
            definition.check_zero_stage(method, int(spec.zero_stage))
        except ConfigValidationError as exc:
            raise ApiError(400, str(exc), param="compute.deepspeed.zero_stage") from exc
        return
    allowed = definition.allowed_zero_stages(method)
    stage = resolve_zero_stage(
        spec,
        world_size=world,
        trains_base_weights=definition.trains_base_weights,
        allowed=allowed,
    )
    # "auto" never picks a stage the method refuses, unless offloading forces one
    stages = ", ".join(str(s) for s in allowed)
    if stage not in allowed:
        raise ApiError(
            400,
            f"offload_param needs ZeRO 3, and the {method.type} method trains under zero_stage "
            f"{stages} only: set offload_param to false",
            param="compute.deepspeed.offload_param",
        )
    if spec.offload_optimizer and stage == 0:
        raise ApiError(
            400,
            f"offload_optimizer needs ZeRO 1, 2 or 3, and the {method.type} method trains "
            f"under zero_stage {stages} only: set offload_optimizer to false",
            param="compute.deepspeed.offload_optimizer",
        )
