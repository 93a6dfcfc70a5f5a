"""Typed dependencies: resources created in the lifespan, handed to handlers."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request

from gateway.auth.limits import KeyLimiter
from gateway.cloud_route import Cloud
from gateway.hybrid import Dispatcher
from gateway.ledger.writer import Ledger
from gateway.metrics import GatewayMetrics
from gateway.policy_store import PolicyStore
from gateway.settings import Settings
from gateway.trace import Recorder
from local_model.engine import Engine


@dataclass(frozen=True)
class Services:
    """Everything the lifespan opens; one per running app."""

    settings: Settings
    engine: Engine
    #: None when no cloud endpoint is configured (local-only gateway)
    cloud: Cloud | None
    policies: PolicyStore
    dispatcher: Dispatcher
    #: finishes each request's trace into a record (ledger, metrics, access log)
    recorder: Recorder
    #: None when GATEWAY_SERVER__METRICS=false
    metrics: GatewayMetrics | None
    #: None when GATEWAY_LEDGER__ENABLED=false
    ledger: Ledger | None
    #: per-key limits; None when no client key has any
    limiter: KeyLimiter | None = None


def services_of(request: Request) -> Services:
    """The running app's services, without a dependency to solve (the completion routes:
    FastAPI's dependency machinery cost 4% of their instructions)."""
    services: Services = request.state.services
    return services


# async on purpose: FastAPI runs plain ``def`` dependencies in a worker thread.
async def get_services(request: Request) -> Services:
    return services_of(request)


ServicesDep = Annotated[Services, Depends(get_services)]
