from __future__ import annotations

from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from gateway import Settings, create_app
from tests.fakes import FakeCloud, FakeEngine


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def cloud() -> FakeCloud:
    """A scripted cloud upstream (tests/fakes.py) for apps built with cloud_factory."""
    return FakeCloud()


@pytest.fixture
def settings() -> Settings:
    return Settings()


@pytest.fixture
def client(engine: FakeEngine, settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings, engine_factory=lambda _: engine)
    with TestClient(app) as test_client:
        yield test_client
