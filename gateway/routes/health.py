from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from gateway.deps import ServicesDep

router = APIRouter(tags=["health"])


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    """The process is alive and its event loop answers."""
    return {"status": "ok"}


@router.get("/readyz")
async def readyz(services: ServicesDep) -> JSONResponse:
    """Ready to take work: the model is loaded and its queue has room.

    The cloud's circuit state is reported but does not make the gateway
    unready: escalations then degrade to local answers (or fail, per policy).
    """
    status = services.engine.status()
    reasons: list[str] = []
    if not status.loaded:
        reasons.append("local model not loaded")
    if status.saturated:
        reasons.append("local queue full")
    policies = services.policies
    body: dict[str, Any] = {
        "status": "not_ready" if reasons else "ready",
        "reasons": reasons,
        "local": {
            "model": services.engine.info.name,
            "n_ctx": services.engine.info.n_ctx,
            "running": status.running,
            "waiting": status.waiting,
            "max_waiting": status.max_waiting,
            "tokens_per_second": round(status.tokens_per_second, 2),
            "estimated_wait_seconds": round(status.estimated_wait_seconds, 3),
        },
        "cloud": (
            {"configured": False}
            if services.cloud is None
            else {"configured": True, "circuit": services.cloud.breaker_state()}
        ),
        "policy": {
            "file": str(policies.path) if policies.path is not None else None,
            "reloads": policies.reloads,
            "failed_reloads": policies.failed_reloads,
        },
    }
    return JSONResponse(body, status_code=503 if reasons else 200)
