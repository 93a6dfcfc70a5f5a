"""The dispatcher hands the tokens' entropies to the confidence gate."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from gateway import Settings, create_app
from gateway.local_route import Evidence
from local_model import TokenLogprob
from tests.fakes import FakeCloud, FakeEngine

# Escalate when the most uncertain of the first two tokens has entropy above 1 nat.
POLICY = """
version: 1
privacy:
  detectors: []
rules: []
default: local_then_check
gate:
  signal: neg_first_k_max_entropy
  first_k: 2
  threshold: -1.0
  holdback_tokens: {holdback}
"""

# The same confident log-probabilities throughout: only the entropies differ.
LOGPROBS = [-0.1, -0.1, -0.1]
CALM = [0.2, 0.9, 3.0]  # the 3.0 lies beyond first_k
TORN = [0.2, 1.5, 0.1]


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(n_ctx=64)


def _client(tmp_path: Path, engine: FakeEngine, cloud: FakeCloud, holdback: int) -> TestClient:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(holdback=holdback))
    app = create_app(
        Settings(policy={"file": policy}),
        engine_factory=lambda _: engine,
        cloud_factory=lambda _: cloud,
    )
    return TestClient(app)


@pytest.fixture(params=[False, True], ids=["json", "stream"])
def stream(request: pytest.FixtureRequest) -> bool:
    return bool(request.param)


@pytest.fixture
def client(tmp_path: Path, engine: FakeEngine, cloud: FakeCloud) -> Iterator[TestClient]:
    # Two tokens held back when streaming: the gate judges exactly the first_k window.
    with _client(tmp_path, engine, cloud, holdback=2) as client:
        yield client


def _ask(client: TestClient, stream: bool) -> tuple[str, float]:
    body = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
    response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200, response.text
    return response.headers["x-hybrid-route"], float(response.headers["x-hybrid-confidence"])


def test_a_calm_answer_stays_local(client: TestClient, engine: FakeEngine, stream: bool) -> None:
    engine.enqueue(["A", "b", "c"], logprobs=LOGPROBS, entropies=CALM)
    route, confidence = _ask(client, stream)
    assert route == "local"
    assert confidence == pytest.approx(-0.9)


def test_a_torn_answer_escalates(client: TestClient, engine: FakeEngine, stream: bool) -> None:
    engine.enqueue(["A", "b", "c"], logprobs=LOGPROBS, entropies=TORN)
    route, confidence = _ask(client, stream)
    assert route == "local->cloud"
    assert confidence == pytest.approx(-1.5)


def test_evidence_keeps_entropies_only_when_every_token_has_one() -> None:
    def token(entropy: float | None) -> TokenLogprob:
        return TokenLogprob(1, "a", b"a", -0.5, entropy=entropy)

    assert Evidence.of([token(0.3), token(1.2)]) == Evidence([-0.5, -0.5], [0.3, 1.2])
    assert Evidence.of([token(0.3), token(None)]) == Evidence([-0.5, -0.5], None)
    assert Evidence.of([]) == Evidence([], [])
