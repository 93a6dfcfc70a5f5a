"""The app factory: nothing happens at import time."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from gateway.deps import Services
from gateway.errors import install_error_handlers
from gateway.request_id import RequestIdMiddleware
from gateway.routes import completions, health, models
from gateway.settings import Settings
from local_model.engine import Engine, EngineConfig
from local_model.model_path import resolve_model_path
from router import ModelCatalog

logger = logging.getLogger(__name__)

EngineFactory = Callable[[Settings], Engine]


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


def create_app(settings: Settings, engine_factory: EngineFactory = load_llama_engine) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        engine = await asyncio.to_thread(engine_factory, settings)
        info = engine.info
        logger.info("local model ready: %s (n_ctx=%d)", info.name, info.n_ctx)
        services = Services(
            settings=settings,
            engine=engine,
            catalog=ModelCatalog(
                routed_id=settings.routed_model_id, local_id=settings.local.model_id
            ),
        )
        try:
            yield {"services": services}
        finally:
            await engine.aclose()

    app = FastAPI(
        title="hybrid-gateway",
        version="0.1.0",
        summary="OpenAI-compatible edge-cloud LLM gateway",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.add_middleware(RequestIdMiddleware)
    app.include_router(health.router)
    app.include_router(models.router)
    app.include_router(completions.router)
    return app
