from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter

from gateway.deps import Services, ServicesDep
from gateway.errors import ModelNotFoundError

router = APIRouter(tags=["models"])

_STARTED = int(time.time())


def _model(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": _STARTED, "owned_by": "hybrid-gateway"}


def model_ids(services: Services) -> list[str]:
    return services.policies.current.model_ids(cloud_configured=services.cloud is not None)


@router.get("/v1/models")
async def list_models(services: ServicesDep) -> dict[str, Any]:
    return {"object": "list", "data": [_model(i) for i in model_ids(services)]}


@router.get("/v1/models/{model_id}")
async def retrieve_model(model_id: str, services: ServicesDep) -> dict[str, Any]:
    if model_id not in model_ids(services):
        raise ModelNotFoundError(f"The model '{model_id}' does not exist", param="model")
    return _model(model_id)
