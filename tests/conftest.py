from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_model.engine import EngineConfig, LlamaEngine
from local_model.model_path import embedded_model_path
from tests.pg import check_server, fresh_schema, server_url


@pytest.fixture(scope="session")
def postgres_server() -> str:
    """URL of the real PostgreSQL server; skips without one, or fails (see tests/pg.py)."""
    url = server_url()
    check_server(url)
    return url


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A URL whose tables live in a fresh schema of their own, dropped after the test."""
    with fresh_schema(postgres_server) as url:
        yield url


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real bundled GGUF: tests that need it fail loudly if it is missing."""
    return embedded_model_path()


@pytest.fixture(scope="session")
def llama_engine(model_path: Path) -> Iterator[LlamaEngine]:
    engine = LlamaEngine(EngineConfig(model_path=model_path, n_ctx=2048, max_waiting=2))
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(scope="session", autouse=True)
def _auth_disabled() -> Iterator[None]:
    """Apps built by tests run without API keys unless a test turns authentication on.

    Session-scoped so that session fixtures building apps see it too. Tests of
    authentication pass ``auth={"disabled": False, ...}`` (init arguments win over
    the environment) or delete the variable.
    """
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("GATEWAY_AUTH__DISABLED", "true")
        yield


@pytest.fixture(autouse=True)
def _ledger_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps built by tests keep their ledger in the test's own directory."""
    monkeypatch.setenv("GATEWAY_LEDGER__PATH", str(tmp_path / "ledger.sqlite3"))
