"""Routing decisions carried out: local, cloud, the gate, degrading — with fakes."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway import Settings, create_app
from gateway.errors import UpstreamError
from local_model import ChatMessage
from tests.fakes import CloudReply, FakeCloud, FakeEngine

POLICY = """
version: 1
privacy:
  detectors: [email]
rules:
  - name: wants-cloud
    route: cloud
    match:
      keywords: [cloudplease]
  - name: pinned-local-rule
    route: local
    match:
      keywords: [stayhome]
  - name: busy
    route: cloud
    match:
      local_wait_over_seconds: 5
default: local_then_check
gate:
  signal: min
  threshold: -2.0
  holdback_tokens: 2
  hard_floor: {floor}
on_cloud_unavailable: {on_unavailable}
"""

CONFIDENT = [-0.1, -0.2, -0.3, -0.1]
WEAK = [-0.1, -4.0, -0.3, -0.1]


def _chat(text: str = "hello there", **extra: Any) -> dict[str, Any]:
    return {"model": "hybrid", "messages": [{"role": "user", "content": text}], **extra}


def _sse(response: Any) -> list[dict[str, Any]]:
    events = [e for e in response.read().decode().split("\n\n") if e]
    assert events[-1] == "data: [DONE]", events[-3:]
    return [json.loads(e[len("data: ") :]) for e in events[:-1]]


def _text(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


Maker = Callable[..., TestClient]


def _eventually(condition: Callable[[], object], seconds: float = 5.0) -> bool:
    """The fake engine notices a cancel at its next token, on the app's own loop."""
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(n_ctx=64)


@pytest.fixture
def make_client(tmp_path: Path, engine: FakeEngine, cloud: FakeCloud) -> Iterator[Maker]:
    clients: list[TestClient] = []

    def make(
        *, with_cloud: bool = True, floor: str = "null", on_unavailable: str = "degrade"
    ) -> TestClient:
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY.format(floor=floor, on_unavailable=on_unavailable))
        settings = Settings(policy={"file": policy})
        app = create_app(
            settings,
            engine_factory=lambda _: engine,
            cloud_factory=lambda _: cloud if with_cloud else None,
        )
        client = TestClient(app)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


def test_confident_local_answer_stays_local(make_client: Maker, engine, cloud) -> None:
    engine.enqueue(["Hi", " there", "!", " ok"], logprobs=CONFIDENT)
    response = make_client().post("/v1/chat/completions", json=_chat())
    assert response.status_code == 200
    assert response.headers["x-hybrid-route"] == "local"
    assert response.headers["x-hybrid-reason"] == "default"
    assert float(response.headers["x-hybrid-confidence"]) == pytest.approx(-0.3)
    assert response.json()["choices"][0]["message"]["content"] == "Hi there! ok"
    assert response.json()["hybrid"]["threshold"] == -2.0
    assert cloud.calls == []


def test_weak_local_answer_escalates(make_client: Maker, engine, cloud) -> None:
    engine.enqueue(["Uh", " maybe"], logprobs=[-0.1, -4.0])
    response = make_client().post(
        "/v1/chat/completions", json=_chat(temperature=0.3, top_k=5, max_tokens=20)
    )
    assert response.status_code == 200
    assert response.headers["x-hybrid-route"] == "local->cloud"
    assert float(response.headers["x-hybrid-confidence"]) == pytest.approx(-4.0)
    body = response.json()
    assert body["choices"][0]["message"]["content"] == "Cloud answer"
    assert body["hybrid"]["route"] == "local->cloud"
    assert body["model"] == "hybrid"
    endpoint, payload = cloud.calls[0]
    assert endpoint == "chat"
    assert payload["messages"] == [{"role": "user", "content": "hello there"}]
    assert payload["temperature"] == 0.3 and payload["max_tokens"] == 20
    assert "top_k" not in payload  # a llama.cpp extension an OpenAI upstream would refuse


def test_stream_confident_holds_back_then_streams_local(make_client: Maker, engine, cloud):
    engine.enqueue(["a", "b", "c", "d"], logprobs=CONFIDENT)
    client = make_client()
    with client.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as response:
        assert response.headers["x-hybrid-route"] == "local"
        assert "x-hybrid-confidence" in response.headers
        chunks = _sse(response)
    assert _text(chunks) == "abcd"
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert cloud.calls == []


def test_stream_weak_switches_to_cloud_before_any_byte(make_client: Maker, engine, cloud):
    engine.enqueue(["a", "b", "c", "d", "e", "f"], logprobs=WEAK + [-0.1, -0.1], delay=0.01)
    client = make_client()
    body = _chat(stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        assert response.headers["x-hybrid-route"] == "local->cloud"
        chunks = _sse(response)
    assert _text(chunks) == "Cloud answer"  # nothing of the local attempt leaked
    ids = {c["id"] for c in chunks}
    assert len(ids) == 1 and ids.pop().startswith("chatcmpl-")
    assert {c["model"] for c in chunks} == {"hybrid"}
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 2
    assert all(c["usage"] is None for c in chunks[:-1])
    assert _eventually(lambda: engine.cancelled), "the gate escalated: local must stop"
    assert cloud.streams[0].closed


def test_cloud_stream_without_usage_is_counted_locally(make_client: Maker, engine, cloud):
    cloud.enqueue(CloudReply(pieces=("one two", " three"), usage=False))
    client = make_client()
    body = _chat("cloudplease", stream=True, stream_options={"include_usage": True})
    with client.stream("POST", "/v1/chat/completions", json=body) as response:
        chunks = _sse(response)
    usage = chunks[-1]["usage"]
    # the fake tokenizer counts words (+1 BOS that the count removes)
    assert usage["completion_tokens"] == 2
    assert usage["prompt_tokens"] > 0


def test_rule_routes_to_cloud(make_client: Maker, engine, cloud) -> None:
    response = make_client().post("/v1/chat/completions", json=_chat("please cloudplease"))
    assert response.headers["x-hybrid-route"] == "cloud"
    assert response.headers["x-hybrid-reason"] == "wants-cloud"
    assert "x-hybrid-confidence" not in response.headers
    assert response.json()["usage"]["prompt_tokens"] == 11
    assert engine.history == []


def test_privacy_floor_never_reaches_the_cloud(make_client: Maker, engine, cloud) -> None:
    engine.enqueue(["weak"], logprobs=[-9.0])
    client = make_client()
    text = "cloudplease mail me at jane.doe@example.com"
    for model in ("hybrid", "cloud"):
        response = client.post("/v1/chat/completions", json={**_chat(text), "model": model})
        assert response.status_code == 200
        assert response.headers["x-hybrid-route"] == "local"
        assert response.headers["x-hybrid-reason"] == "privacy-floor"
    assert cloud.calls == []


def test_load_rule_offloads_to_the_cloud(make_client: Maker, engine, cloud) -> None:
    client = make_client()
    engine.seconds_per_request = 10.0
    engine.enqueue(["slow"] * 30, delay=0.05)
    with client.stream("POST", "/v1/chat/completions", json=_chat("x", model="local", stream=True)):
        response = client.post("/v1/chat/completions", json=_chat())
    assert response.headers["x-hybrid-reason"] == "busy"
    assert response.headers["x-hybrid-route"] == "cloud"


def test_a_full_local_queue_offloads_before_any_wait_was_measured(
    make_client: Maker, engine: FakeEngine, cloud: FakeCloud
) -> None:
    """A cold burst: no request has finished, so no wait is known, but the queue is full."""
    client = make_client()
    assert engine.seconds_per_request == 0.0
    with contextlib.ExitStack() as streams:
        for _ in range(5):  # one running and four waiting fill the fake's queue
            engine.enqueue(["slow"] * 40, delay=0.05)
            body = _chat("x", model="local", stream=True)
            streams.enter_context(client.stream("POST", "/v1/chat/completions", json=body))
        assert engine.status().saturated
        response = client.post("/v1/chat/completions", json=_chat())
    assert response.status_code == 200
    assert response.headers["x-hybrid-reason"] == "busy"
    assert response.headers["x-hybrid-route"] == "cloud"


def test_no_cloud_weak_answer_is_served_degraded(make_client: Maker, engine, cloud) -> None:
    engine.enqueue(["Uh"], logprobs=[-4.0])
    response = make_client(with_cloud=False).post("/v1/chat/completions", json=_chat())
    assert response.status_code == 200
    assert response.headers["x-hybrid-degraded"] == "cloud-unavailable"
    assert response.json()["hybrid"]["degraded"] == "cloud-unavailable"


def test_no_cloud_confident_answer_is_not_degraded(make_client: Maker, engine) -> None:
    engine.enqueue(["Yes"], logprobs=[-0.1])
    response = make_client(with_cloud=False).post("/v1/chat/completions", json=_chat())
    assert "x-hybrid-degraded" not in response.headers


def test_no_cloud_rule_to_cloud_degrades_or_fails(make_client: Maker, engine) -> None:
    degrade = make_client(with_cloud=False).post("/v1/chat/completions", json=_chat("cloudplease"))
    assert degrade.status_code == 200
    assert degrade.headers["x-hybrid-degraded"] == "cloud-unavailable"
    fail = make_client(with_cloud=False, on_unavailable="fail")
    refused = fail.post("/v1/chat/completions", json=_chat("cloudplease"))
    assert refused.status_code == 503
    assert refused.json()["error"]["code"] == "cloud_unavailable"
    assert "retry-after" not in refused.headers  # no cloud at all: waiting will not help


def test_no_cloud_weak_answer_fails_when_the_policy_says_so(make_client: Maker, engine) -> None:
    engine.enqueue(["Uh"], logprobs=[-4.0])
    client = make_client(with_cloud=False, on_unavailable="fail")
    assert client.post("/v1/chat/completions", json=_chat()).status_code == 503
    engine.enqueue(["a", "b", "c"], logprobs=[-4.0, -0.1, -0.1])
    with client.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as response:
        assert response.status_code == 503  # judged before the first byte


def test_cloud_model_id_is_unknown_without_a_cloud(make_client: Maker) -> None:
    local_only = make_client(with_cloud=False)
    assert [m["id"] for m in local_only.get("/v1/models").json()["data"]] == ["hybrid", "local"]
    missing = local_only.post("/v1/chat/completions", json={**_chat(), "model": "cloud"})
    assert missing.status_code == 404
    with_cloud = make_client()
    ids = [m["id"] for m in with_cloud.get("/v1/models").json()["data"]]
    assert ids == ["hybrid", "local", "cloud"]


def test_escalation_failure_falls_back_to_the_local_answer(make_client: Maker, engine, cloud):
    engine.enqueue(["Uh"], logprobs=[-4.0])
    cloud.enqueue(CloudReply(error=UpstreamError("boom")))
    response = make_client().post("/v1/chat/completions", json=_chat())
    assert response.status_code == 200
    assert response.headers["x-hybrid-degraded"] == "cloud-error"
    assert response.json()["choices"][0]["message"]["content"] == "Uh"


def test_escalation_failure_is_an_error_when_the_policy_fails(make_client: Maker, engine, cloud):
    engine.enqueue(["Uh"], logprobs=[-4.0])
    cloud.enqueue(CloudReply(error=UpstreamError("upstream said no")))
    response = make_client(on_unavailable="fail").post("/v1/chat/completions", json=_chat())
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"


def test_pinned_cloud_failure_is_not_hidden(make_client: Maker, engine, cloud) -> None:
    cloud.enqueue(CloudReply(error=UpstreamError("down")))
    response = make_client().post("/v1/chat/completions", json={**_chat(), "model": "cloud"})
    assert response.status_code == 502
    assert engine.history == []


def test_stream_escalation_failure_restarts_locally(make_client: Maker, engine, cloud) -> None:
    engine.enqueue(["a", "b", "c"], logprobs=[-4.0, -0.1, -0.1])
    engine.enqueue(["x", "y"], logprobs=[-0.1, -0.1])
    cloud.enqueue(CloudReply(error=UpstreamError("down")))
    client = make_client()
    with client.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as response:
        assert response.headers["x-hybrid-degraded"] == "cloud-error"
        assert _text(_sse(response)) == "xy"


def test_breaker_open_keeps_weak_answers_local(make_client: Maker, engine, cloud) -> None:
    cloud.state = "open"
    engine.enqueue(["Uh"], logprobs=[-4.0])
    response = make_client().post("/v1/chat/completions", json=_chat())
    assert response.headers["x-hybrid-degraded"] == "cloud-unavailable"
    assert cloud.calls == []


def test_hard_floor_stops_local_generation_early(make_client: Maker, engine, cloud) -> None:
    engine.enqueue(["a", "b", "c", "d", "e"], logprobs=[-0.1, -9.0, -0.1, -0.1, -0.1], delay=0.01)
    response = make_client(floor="-5.0").post("/v1/chat/completions", json=_chat())
    assert response.headers["x-hybrid-route"] == "local->cloud"
    assert _eventually(lambda: engine.cancelled)  # stopped at the floor, not run to the end


def test_prompt_too_long_for_local_goes_to_the_cloud(make_client: Maker, engine, cloud) -> None:
    long_text = " ".join(["word"] * 80)  # the fake context holds 64 tokens
    response = make_client().post("/v1/chat/completions", json=_chat(long_text))
    assert response.status_code == 200
    assert response.headers["x-hybrid-route"] == "cloud"
    assert response.headers["x-hybrid-reason"] == "exceeds-local-context"
    pinned = make_client().post("/v1/chat/completions", json={**_chat(long_text), "model": "local"})
    assert pinned.json()["error"]["code"] == "context_length_exceeded"


def test_token_id_prompts_never_go_to_the_cloud(make_client: Maker, engine, cloud) -> None:
    engine.enqueue(["Uh"], logprobs=[-4.0])
    response = make_client().post("/v1/completions", json={"model": "hybrid", "prompt": [5, 6]})
    assert response.status_code == 200
    assert response.headers["x-hybrid-route"] == "local"
    assert cloud.calls == []


def test_text_completion_escalates_with_the_prompt(make_client: Maker, engine, cloud) -> None:
    engine.enqueue(["Uh"], logprobs=[-4.0])
    response = make_client().post(
        "/v1/completions", json={"model": "hybrid", "prompt": "Once upon", "max_tokens": 5}
    )
    assert response.headers["x-hybrid-route"] == "local->cloud"
    assert cloud.calls == [("text", {"model": "hybrid", "prompt": "Once upon", "max_tokens": 5})]
    assert response.json()["choices"][0]["text"] == "Cloud answer"


def test_readyz_reports_cloud_circuit_and_policy(make_client: Maker, cloud) -> None:
    body = make_client().get("/readyz").json()
    assert body["cloud"] == {"configured": True, "circuit": {"state": "closed"}}
    assert body["policy"]["file"].endswith("policy.yaml")


def test_holdback_zero_judges_the_whole_streamed_answer(
    tmp_path: Path, engine: FakeEngine, cloud: FakeCloud
) -> None:
    policy = tmp_path / "whole.yaml"
    policy.write_text(
        "version: 1\ndefault: local_then_check\ngate: {threshold: -2.0, holdback_tokens: 0}\n"
    )
    app = create_app(
        Settings(policy={"file": policy}),
        engine_factory=lambda _: engine,
        cloud_factory=lambda _: cloud,
    )
    # the weak token comes late: only a whole-answer judgement sees it
    engine.enqueue(["a"] * 30 + ["b"], logprobs=[-0.1] * 30 + [-5.0])
    with TestClient(app) as client:
        with client.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as response:
            assert response.headers["x-hybrid-route"] == "local->cloud"
            assert _text(_sse(response)) == "Cloud answer"


def test_the_gate_sees_the_prompt_length(tmp_path: Path, engine: FakeEngine, cloud) -> None:
    """A logistic gate weighing only log_prompt_tokens: the same confident answer stays
    local for a short prompt and escalates for a long one (the dispatcher passes the
    prompt's token count to the gate)."""
    short, long = "hi", " ".join(["word"] * 40)
    counts = [
        len(engine.tokenizer.tokenize_chat([ChatMessage("user", text)])) for text in (short, long)
    ]
    assert counts[0] < counts[1]
    midpoint = (math.log1p(counts[0]) + math.log1p(counts[1])) / 2
    policy = tmp_path / "policy.yaml"
    policy.write_text(
        "version: 1\nprivacy:\n  detectors: []\nrules: []\ndefault: local_then_check\n"
        "gate:\n  signal: logistic\n  threshold: 0.5\n  holdback_tokens: 0\n"
        f"  logistic:\n    intercept: {10 * midpoint}\n    weights: {{log_prompt_tokens: -10.0}}\n"
    )
    app = create_app(
        Settings(policy={"file": policy}),
        engine_factory=lambda _: engine,
        cloud_factory=lambda _: cloud,
    )
    with TestClient(app) as client:
        routes = []
        for text in (short, long):
            engine.enqueue(["Sure", "."], logprobs=CONFIDENT[:2])
            response = client.post("/v1/chat/completions", json=_chat(text))
            assert response.status_code == 200, response.text
            routes.append(response.headers["x-hybrid-route"])
    assert routes == ["local", "local->cloud"]
