from __future__ import annotations

from fastapi import APIRouter, Request, Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.deps import ServicesDep

router = APIRouter(tags=["metrics"])


@router.get("/metrics", include_in_schema=False)
async def metrics(request: Request, services: ServicesDep) -> Response:
    """Prometheus exposition; OpenMetrics when the scraper's Accept header asks for it."""
    if services.metrics is None:
        raise StarletteHTTPException(404, "metrics are disabled (GATEWAY_SERVER__METRICS=false)")
    body, content_type = services.metrics.render(request.headers.get("accept"))
    return Response(body, media_type=content_type)
