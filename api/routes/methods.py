"""/v1/methods: the training methods this service runs (from the method registry)."""

from __future__ import annotations

import functools

from fastapi import APIRouter, Depends

from api.deps import get_tenant
from api.schemas import ListObject, MethodObject
from steering_core.methods.registry import method_definitions

router = APIRouter(prefix="/v1/methods", tags=["methods"])


@functools.cache
def _methods() -> ListObject:
    return ListObject(
        data=[
            MethodObject(
                id=d.name,
                description=d.description,
                data_formats=list(d.data_formats),
                defaults=d.defaults.model_dump(),
                config_schema=d.config.model_json_schema(),
            )
            for d in method_definitions()
        ]
    )


@router.get("", response_model=ListObject)
async def list_methods(_tenant: str = Depends(get_tenant)) -> ListObject:
    """Every method a job may name in ``method.type``, with its defaults, the training data
    formats it accepts and the JSON schema of its block."""
    return _methods()
