"""The app factory: nothing happens at import time."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from starlette.middleware.cors import CORSMiddleware

from gateway.auth.keys import KeyRing, check_configuration
from gateway.auth.limits import KeyLimitMiddleware, open_limiter
from gateway.auth.middleware import AuthMiddleware, warn_if_disabled
from gateway.body_limit import BodyLimitMiddleware
from gateway.cloud_route import Cloud
from gateway.deps import Services
from gateway.errors import install_error_handlers
from gateway.hybrid import Dispatcher
from gateway.ledger.stores import describe_store, open_store
from gateway.ledger.writer import Ledger
from gateway.metrics import GatewayMetrics
from gateway.policy_store import PolicyStore
from gateway.request_id import RequestIdMiddleware
from gateway.routes import admin, completions, health, models, usage
from gateway.routes import metrics as metrics_routes
from gateway.settings import Settings
from gateway.trace import Recorder, TraceMiddleware
from local_model.engine import Engine, EngineConfig
from local_model.model_path import resolve_model_path

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Engine]
CloudFactory = Callable[[Settings], Cloud | None]


def load_llama_engine(settings: Settings) -> Engine:
    """Load the configured GGUF (or the embedded default) into a LlamaEngine."""
    from local_model.engine import LlamaEngine

    local = settings.local
    path = resolve_model_path(local.model_path)
    logger.info("loading local model %s", path)
    return LlamaEngine(
        EngineConfig(
            model_path=path,
            n_ctx=local.n_ctx,
            n_threads=local.n_threads,
            n_threads_batch=local.n_threads_batch,
            n_batch=local.n_batch,
            max_waiting=local.max_waiting,
            prefix_cache=local.prefix_cache,
            stream_interval=local.stream_interval_ms / 1000,
        )
    )


def connect_cloud(settings: Settings) -> Cloud | None:
    """The configured OpenAI-compatible upstream, or None for a local-only gateway."""
    if not settings.cloud.configured:
        return None
    from gateway.cloud import CloudClient

    return CloudClient(settings.cloud)


def open_ledger(settings: Settings) -> Ledger | None:
    if not settings.ledger.enabled:
        logger.warning("the request ledger is disabled: no request records are kept")
        return None
    logger.info("request ledger: %s", describe_store(settings.ledger))
    return Ledger(
        open_store(settings.ledger),
        settings.ledger,
        cloud_model=settings.cloud.model,
    )


def create_app(
    settings: Settings,
    engine_factory: EngineFactory = load_llama_engine,
    cloud_factory: CloudFactory = connect_cloud,
) -> FastAPI:
    # No client keys and auth on: nobody could use it. Refuse now, saying how to fix it.
    check_configuration(settings.auth)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        warn_if_disabled(settings)
        policies = PolicyStore(settings.policy.file)
        engine = await asyncio.to_thread(engine_factory, settings)
        info = engine.info
        logger.info("local model ready: %s (n_ctx=%d)", info.name, info.n_ctx)
        cloud = cloud_factory(settings)
        if cloud is None:
            logger.info("no cloud endpoint configured: requests the policy escalates stay local")
        ledger = open_ledger(settings)
        if ledger is not None:
            await ledger.start()
        metrics = GatewayMetrics() if settings.server.metrics else None
        if metrics is not None:
            metrics.bind(
                engine_status=engine.status,
                breaker_state=cloud.breaker_state if cloud is not None else None,
                ledger_stats=(lambda: (ledger.queue_depth, ledger.dropped)) if ledger else None,
            )
        limiter = await open_limiter(settings, ledger.store if ledger is not None else None)
        recorder = Recorder(settings, ledger=ledger, metrics=metrics, limiter=limiter)
        services = Services(
            settings=settings,
            engine=engine,
            cloud=cloud,
            policies=policies,
            dispatcher=Dispatcher(engine, cloud),
            recorder=recorder,
            metrics=metrics,
            ledger=ledger,
            limiter=limiter,
        )
        # Everything allocated so far lives as long as the process: keep the
        # collector from rescanning it (full collections paused the loop ~56 ms).
        gc.collect()
        gc.freeze()
        loop = asyncio.get_running_loop()
        watcher = None
        if settings.policy.file is not None:
            watcher = asyncio.create_task(policies.watch(settings.policy.reload_interval_s))
        sighup = policies.install_sighup(loop)
        try:
            yield {"services": services}
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            if sighup:
                policies.remove_sighup(loop)
            # Records of the last requests need their generations' stats: before the engine.
            await recorder.drain()
            await engine.aclose()
            if cloud is not None:
                await cloud.aclose()
            if ledger is not None:
                await ledger.aclose()  # flushes what is queued

    app = FastAPI(
        title="hybrid-gateway",
        version="0.1.0",
        summary="OpenAI-compatible edge-cloud LLM gateway",
        lifespan=lifespan,
        # FastAPI's own limit would answer a plain-text 413 outside our middleware
        # (no request id, no ledger record): BodyLimitMiddleware enforces ours.
        max_body_size=None,
    )
    install_error_handlers(app)
    # Innermost of ours: a 413 still gets its request id and its ledger record.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.limits.max_body_bytes)
    # Per-key minute limits, then authentication: both before the body is read, and both
    # inside the trace, so a 401 or 429 still gets its request id and its ledger record.
    app.add_middleware(KeyLimitMiddleware)
    app.add_middleware(AuthMiddleware, keys=KeyRing(settings.auth))
    app.add_middleware(TraceMiddleware)
    if settings.cors.allow_origins:
        # Outside authentication: a preflight carries no key; 401s get CORS headers too.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors.allow_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=[
                "x-request-id",
                "x-hybrid-route",
                "x-hybrid-reason",
                "x-hybrid-confidence",
                "x-hybrid-degraded",
                "retry-after",
            ],
            # Keys travel in the Authorization header, never in cookies.
            allow_credentials=False,
            max_age=600,
        )
    # Added last = outermost: the request id exists before the trace opens.
    app.add_middleware(RequestIdMiddleware)
    # Routes are matched in order: the completions, nearly every request, first.
    app.include_router(completions.router)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(usage.router)
    app.include_router(metrics_routes.router)
    app.include_router(admin.router)
    return app
