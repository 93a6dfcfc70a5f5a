from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_model.engine import EngineConfig, LlamaEngine
from local_model.model_path import embedded_model_path


@pytest.fixture(scope="session")
def model_path() -> Path:
    """The real bundled GGUF: tests that need it fail loudly if it is missing."""
    return embedded_model_path()


@pytest.fixture(scope="session")
def llama_engine(model_path: Path) -> Iterator[LlamaEngine]:
    engine = LlamaEngine(EngineConfig(model_path=model_path, n_ctx=2048, max_waiting=2))
    yield engine
    asyncio.run(engine.aclose())


@pytest.fixture(autouse=True)
def _ledger_in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Apps built by tests keep their ledger in the test's own directory."""
    monkeypatch.setenv("GATEWAY_LEDGER__PATH", str(tmp_path / "ledger.sqlite3"))
