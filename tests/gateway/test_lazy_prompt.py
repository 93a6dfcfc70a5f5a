"""The prompt is tokenized only when a route, a limit or a length rule needs the count."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway import Settings, create_app
from gateway.errors import UpstreamError
from tests.fakes import CloudReply, FakeCloud, FakeEngine, FakeTokenizer

POLICY = """
version: 1
privacy:
  detectors: []
rules:
  - name: long
    route: cloud
    match:
      prompt_tokens_over: 40
  - name: wants-cloud
    route: cloud
    match:
      keywords: [cloudplease]
default: local
"""


class CountingTokenizer(FakeTokenizer):
    def __init__(self) -> None:
        self.calls = 0

    def tokenize_rendered(self, prompt: str) -> list[int]:
        self.calls += 1
        return super().tokenize_rendered(prompt)


class Gateway:
    def __init__(self, client: TestClient, tokenizer: CountingTokenizer, ledger: Path) -> None:
        self.client = client
        self.tokenizer = tokenizer
        self.ledger = ledger

    def chat(self, text: str, **extra: Any) -> Any:
        body = {"model": "hybrid", "messages": [{"role": "user", "content": text}], **extra}
        return self.client.post("/v1/chat/completions", json=body)

    def records(self) -> list[dict[str, Any]]:
        self.client.__exit__(None, None, None)  # shut down: the ledger is flushed
        with sqlite3.connect(self.ledger) as connection:
            connection.row_factory = sqlite3.Row
            rows = [dict(r) for r in connection.execute("SELECT * FROM records ORDER BY id")]
        connection.close()
        return rows


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(n_ctx=256)


@pytest.fixture
def gateway(tmp_path: Path, engine: FakeEngine, cloud: FakeCloud) -> Iterator[Gateway]:
    tokenizer = CountingTokenizer()
    engine._tokenizer = tokenizer
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    ledger = tmp_path / "ledger.sqlite3"
    settings = Settings(
        policy={"file": policy}, ledger={"path": ledger}, limits={"max_prompt_tokens": 100}
    )
    app = create_app(settings, engine_factory=lambda _: engine, cloud_factory=lambda _: cloud)
    client = TestClient(app)
    client.__enter__()
    yield Gateway(client, tokenizer, ledger)
    client.__exit__(None, None, None)


def test_a_cloud_routed_short_prompt_is_never_tokenized(gateway: Gateway, cloud: FakeCloud):
    response = gateway.chat("cloudplease say hi")
    assert response.status_code == 200
    assert response.headers["x-hybrid-reason"] == "wants-cloud"
    assert len(cloud.calls) == 1
    assert gateway.tokenizer.calls == 0
    (record,) = gateway.records()
    # The local count was never needed; the cloud's own usage is recorded.
    assert record["prompt_tokens"] is None
    assert record["cloud_prompt_tokens"] == 11


def test_a_length_rule_counts_only_prompts_the_bound_cannot_settle(
    gateway: Gateway, engine: FakeEngine
) -> None:
    # "<s> <user> hi there\n": 20 bytes, so at most 20 tokens: the rule cannot match.
    engine.enqueue(["ok"])
    assert gateway.chat("hi there").headers["x-hybrid-reason"] == "default"
    assert gateway.tokenizer.calls == 1  # for the local generation, once
    # 50 words: more bytes than the rule's 40, so counted: 52 tokens, over 40.
    assert gateway.chat(" ".join(["w"] * 50)).headers["x-hybrid-reason"] == "long"
    assert gateway.tokenizer.calls == 2
    # Long words: 85 bytes but 5 tokens: counted once, the rule does not match, and the
    # local generation reuses that count.
    engine.enqueue(["ok"])
    response = gateway.chat("supercalifragilistic " * 3)
    assert response.headers["x-hybrid-reason"] == "default"
    assert gateway.tokenizer.calls == 3
    assert len(engine.history[-1].prompt_tokens) == 5
    rows = gateway.records()
    assert [r["prompt_tokens"] for r in rows] == [4, 52, 5]


def test_a_cloud_failure_answered_locally_tokenizes_then(
    gateway: Gateway, engine: FakeEngine, cloud: FakeCloud
) -> None:
    cloud.enqueue(CloudReply(error=UpstreamError("boom")))
    engine.enqueue(["local", " answer"])
    response = gateway.chat("cloudplease now")
    assert response.status_code == 200
    assert response.headers["x-hybrid-route"] == "local"
    assert response.headers["x-hybrid-degraded"] == "cloud-error"
    assert response.json()["choices"][0]["message"]["content"] == "local answer"
    assert gateway.tokenizer.calls == 1
    (record,) = gateway.records()
    assert record["prompt_tokens"] == 4


def test_the_prompt_limit_holds_without_a_count_only_when_the_bound_settles_it(
    gateway: Gateway,
) -> None:
    # 101 tokens > the limit of 100: refused before routing, even to the cloud.
    response = gateway.chat("cloudplease " + " ".join(["w"] * 98))
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "context_length_exceeded"
    assert "101 tokens" in response.json()["error"]["message"]
    # 250 bytes but 7 tokens: counted, and under the limit.
    response = gateway.chat("cloudplease " + " ".join(["x" * 48] * 5))
    assert response.status_code == 200
    assert gateway.tokenizer.calls == 2


def test_a_too_large_max_tokens_is_refused_on_the_cloud_route_too(gateway: Gateway) -> None:
    response = gateway.chat("cloudplease", max_tokens=10**6)
    assert response.status_code == 400
    assert response.json()["error"]["param"] == "max_tokens"
    assert gateway.tokenizer.calls == 0
