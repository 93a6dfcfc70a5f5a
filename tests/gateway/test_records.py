"""Every completion request leaves exactly one ledger record, whatever happened."""

from __future__ import annotations

import json
import logging
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway import Settings, create_app
from gateway.errors import UpstreamError
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
default: local_then_check
gate:
  signal: min
  threshold: -2.0
  holdback_tokens: 2
on_cloud_unavailable: degrade
"""


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine(n_ctx=64)


Run = Callable[..., list[dict[str, Any]]]


@pytest.fixture
def run(tmp_path: Path, engine: FakeEngine, cloud: FakeCloud) -> Iterator[Run]:
    """Run requests through a fresh app, shut it down (flushing the ledger), read the rows."""

    def go(
        requests: Callable[[TestClient], None], with_engine: FakeEngine | None = None
    ) -> list[dict[str, Any]]:
        serving = with_engine or engine
        policy = tmp_path / "policy.yaml"
        policy.write_text(POLICY)
        db = tmp_path / f"ledger-{time.monotonic_ns()}.sqlite3"
        settings = Settings(
            policy={"file": policy},
            ledger={"path": db, "hardware_usd_per_hour": 3.6},
            cloud={"model": "gpt-4o-mini"},
        )
        app = create_app(settings, engine_factory=lambda _: serving, cloud_factory=lambda _: cloud)
        with TestClient(app) as client:
            requests(client)
        with sqlite3.connect(db) as connection:
            connection.row_factory = sqlite3.Row
            rows = [
                dict(r) for r in connection.execute("SELECT * FROM records ORDER BY started_at")
            ]
        connection.close()
        return rows

    yield go


def _chat(text: str = "hello", **extra: Any) -> dict[str, Any]:
    return {"model": "hybrid", "messages": [{"role": "user", "content": text}], **extra}


def test_local_answer_record(run: Run, engine: FakeEngine) -> None:
    engine.enqueue(["Hi", " there"], logprobs=[-0.1, -0.5])
    [row] = run(
        lambda c: c.post("/v1/chat/completions", json=_chat(), headers={"x-request-id": "r-1"})
    )
    assert row["request_id"] == "r-1"
    assert (row["endpoint"], row["model"], row["stream"]) == ("chat", "hybrid", 0)
    assert (row["status"], row["error"]) == (200, None)
    assert (row["route"], row["reason"], row["degraded"]) == ("local", "default", None)
    assert row["confidence"] == pytest.approx(-0.5)
    assert row["threshold"] == -2.0
    assert row["local_completion_tokens"] == 2
    assert row["local_prompt_tokens"] == row["prompt_tokens"] == 3
    # the fake engine reports 0.01 s prefill + 0.02 s decode
    assert row["local_seconds"] == pytest.approx(0.03)
    assert (row["cloud_attempts"], row["cloud_prompt_tokens"], row["cloud_model"]) == (0, 0, None)
    assert row["total_seconds"] >= row["ttft_seconds"] > 0
    # $3.6/h = $0.001/s: 0.03 s of local compute
    assert row["local_usd"] == pytest.approx(0.00003)
    assert row["cloud_usd"] == 0
    # counterfactual: 3 prompt + 2 completion tokens at gpt-4o-mini list prices
    assert row["counterfactual_usd"] > 0
    assert row["savings_usd"] == pytest.approx(row["counterfactual_usd"] - row["local_usd"])


def test_escalated_record_pays_for_both(run: Run, engine: FakeEngine) -> None:
    engine.enqueue(["Uh"], logprobs=[-4.0])
    [row] = run(lambda c: c.post("/v1/chat/completions", json=_chat()))
    assert (row["route"], row["reason"]) == ("local->cloud", "default")
    assert row["confidence"] == pytest.approx(-4.0)
    assert row["local_completion_tokens"] == 1
    assert (row["cloud_prompt_tokens"], row["cloud_completion_tokens"]) == (11, 2)
    assert (row["cloud_attempts"], row["cloud_model"]) == (1, "gpt-4o-mini")
    assert row["cloud_usd"] > 0
    assert row["savings_usd"] == pytest.approx(-row["local_usd"])
    assert row["savings_usd"] < 0


def test_streamed_cloud_record(run: Run, cloud: FakeCloud) -> None:
    def go(client: TestClient) -> None:
        with client.stream(
            "POST", "/v1/chat/completions", json=_chat("cloudplease", stream=True)
        ) as response:
            response.read()

    [row] = run(go)
    assert (row["route"], row["reason"], row["stream"], row["status"]) == (
        "cloud",
        "wants-cloud",
        1,
        200,
    )
    assert row["cloud_completion_tokens"] == 2 and row["local_completion_tokens"] == 0
    assert row["savings_usd"] == pytest.approx(0.0)


def test_refused_requests_are_recorded(run: Run, engine: FakeEngine) -> None:
    def go(client: TestClient) -> None:
        client.post("/v1/chat/completions", json={"model": "nope", "messages": []})
        client.post("/v1/chat/completions", json={**_chat(), "model": "gpt-9"})
        client.post(
            "/v1/completions", content=b"{not json", headers={"content-type": "application/json"}
        )

    rows = run(go)
    assert [(r["status"], r["error"], r["route"]) for r in rows] == [
        (400, "invalid_request_error", None),
        (404, "model_not_found", None),
        (400, "invalid_request_error", None),
    ]
    assert rows[0]["model"] == "nope"
    assert rows[1]["model"] == "gpt-9"
    assert rows[2]["endpoint"] == "text"
    assert all(r["counterfactual_usd"] == 0 and r["local_usd"] == 0 for r in rows)


def test_a_model_id_no_utf8_can_carry_is_recorded_and_does_not_stall_the_ledger(
    run: Run, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    # JSON may escape a lone surrogate; Python's json decodes it into a str that
    # SQLite (and any UTF-8 log) refuses, which used to fail the ledger's batch on
    # every retry, taking the requests around it down too.
    caplog.set_level(logging.INFO, logger="gateway.access")
    engine.enqueue(["fine"], logprobs=[-0.1])

    def go(client: TestClient) -> None:
        body = b'{"model": "a\\ud800b", "messages": [{"role": "user", "content": "hi"}]}'
        refused = client.post(
            "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
        )
        assert refused.status_code == 400
        assert client.post("/v1/chat/completions", json=_chat(model="local")).status_code == 200

    rows = run(go)
    assert [(r["status"], r["model"]) for r in rows] == [(400, "a?b"), (200, "local")]
    access = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert [json.loads(line)["model"] for line in access] == ["a?b", "local"]


def test_degraded_and_failed_cloud_records(run: Run, engine: FakeEngine, cloud: FakeCloud) -> None:
    engine.enqueue(["Uh"], logprobs=[-4.0])
    cloud.enqueue(CloudReply(error=UpstreamError("down")))
    cloud.enqueue(CloudReply(error=UpstreamError("down")))

    def go(client: TestClient) -> None:
        client.post("/v1/chat/completions", json=_chat())
        client.post("/v1/chat/completions", json={**_chat(), "model": "cloud"})

    degraded, failed = run(go)
    assert (degraded["status"], degraded["route"], degraded["degraded"]) == (
        200,
        "local",
        "cloud-error",
    )
    assert degraded["cloud_attempts"] == 1 and degraded["local_completion_tokens"] == 1
    assert (failed["status"], failed["error"], failed["route"]) == (502, "upstream_error", None)
    assert failed["reason"] == "model-pinned-cloud"


def test_queue_full_is_recorded(run: Run) -> None:
    busy = FakeEngine(max_waiting=0)
    busy.enqueue(["slow"] * 40, delay=0.02)

    def go(client: TestClient) -> None:
        with client.stream("POST", "/v1/chat/completions", json=_chat(model="local", stream=True)):
            assert client.post("/v1/chat/completions", json=_chat(model="local")).status_code == 503

    rows = run(go, busy)
    statuses = sorted((r["status"], r["error"]) for r in rows)
    # the stream was left after its headers: the client went away
    assert statuses == [(499, "client_disconnected"), (503, "queue_full")]


def test_privacy_floor_is_recorded(run: Run, engine: FakeEngine) -> None:
    [row] = run(
        lambda c: c.post("/v1/chat/completions", json=_chat("mail a@b.example cloudplease"))
    )
    assert (row["route"], row["reason"], row["privacy_match"]) == (
        "local",
        "privacy-floor",
        "email",
    )


def test_one_record_per_request_under_a_mix(run: Run, engine: FakeEngine) -> None:
    def go(client: TestClient) -> None:
        for i in range(6):
            client.post("/v1/chat/completions", json=_chat(f"q{i}", model="local"))
        client.get("/v1/models")
        client.get("/healthz")

    rows = run(go)
    assert len(rows) == 6
    assert len({r["request_id"] for r in rows}) == 6


def test_serving_goes_on_when_the_ledger_cannot_write(tmp_path: Path, engine: FakeEngine) -> None:
    # the "database file" is a directory: every write fails
    unwritable = tmp_path / "not-a-file.sqlite3"
    unwritable.mkdir()
    settings = Settings(ledger={"path": unwritable}, cloud={"model": "gpt-4o-mini"})
    app = create_app(settings, engine_factory=lambda _: engine, cloud_factory=lambda _: None)
    with TestClient(app) as client:
        for _ in range(3):
            response = client.post("/v1/chat/completions", json=_chat(model="local"))
            assert response.status_code == 200
        assert client.get("/readyz").status_code == 200
        metrics = client.get("/metrics").text
    # nothing was written, and the loss is visible: queued or dropped, never silent
    assert "hybrid_gateway_ledger_queue_depth" in metrics
    assert "hybrid_gateway_requests_total" in metrics


def test_content_is_stored_masked_only_when_asked(
    tmp_path: Path, engine: FakeEngine, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")

    def rows_with(store_content: bool) -> list[dict[str, Any]]:
        db = tmp_path / f"content-{store_content}.sqlite3"
        settings = Settings(ledger={"path": db, "store_content": store_content})
        app = create_app(settings, engine_factory=lambda _: engine, cloud_factory=lambda _: None)
        engine.enqueue(["Write to ", "a@b.example", " today"], logprobs=[-0.1] * 3)
        engine.enqueue(["x", "y"], logprobs=[-0.1] * 2)
        with TestClient(app) as client:
            client.post(
                "/v1/chat/completions", json=_chat("my mail is jane@doe.example", model="local")
            )
            with client.stream(
                "POST", "/v1/chat/completions", json=_chat("hi", model="local", stream=True)
            ) as response:
                response.read()
        with sqlite3.connect(db) as connection:
            connection.row_factory = sqlite3.Row
            rows = [dict(r) for r in connection.execute("SELECT * FROM records ORDER BY id")]
        connection.close()
        return rows

    plain, streamed = rows_with(True)
    assert plain["prompt_text"] == "user: my mail is [email]"
    assert plain["completion_text"] == "Write to [email] today"
    assert (streamed["prompt_text"], streamed["completion_text"]) == ("user: hi", "xy")
    assert all(r["prompt_text"] is None and r["completion_text"] is None for r in rows_with(False))
    access = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert len(access) == 4
    assert not any("jane" in line or "prompt_text" in line for line in access)


def test_an_error_code_is_kept_as_valid_utf8() -> None:
    from gateway.trace import _error_code

    assert _error_code(b'{"error": {"code": "bad\\ud800", "type": "x"}}') == "bad?"
    assert _error_code(b'{"error": {"code": null, "type": "invalid_request_error"}}') == (
        "invalid_request_error"
    )
    assert _error_code(b"not json") is None


@pytest.mark.parametrize("sink", ["none", "metrics", "access log"])
def test_a_record_is_built_only_when_something_reads_it(
    engine: FakeEngine, monkeypatch: pytest.MonkeyPatch, sink: str
) -> None:
    from gateway import access_log
    from gateway.trace import RequestTrace

    built: list[str] = []
    to_record = RequestTrace.to_record

    def counting(self: RequestTrace, done: Any) -> Any:
        built.append(self.request_id)
        return to_record(self, done)

    monkeypatch.setattr(RequestTrace, "to_record", counting)
    # No ledger and no key limits here; the access log as serve sets it up.
    monkeypatch.setattr(access_log.logger, "disabled", sink != "access log")
    monkeypatch.setattr(access_log.logger, "level", logging.INFO)
    settings = Settings(ledger={"enabled": False}, server={"metrics": sink == "metrics"})
    app = create_app(settings, engine_factory=lambda _: engine)
    with TestClient(app) as client:
        body = {"model": "local", "messages": [{"role": "user", "content": "hi"}]}
        response = client.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert len(built) == (0 if sink == "none" else 1)
