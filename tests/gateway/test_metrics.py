from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

from gateway.deps import get_services
from gateway.ledger.record import LedgerRecord
from gateway.metrics import GatewayMetrics
from gateway.routes.metrics import router
from local_model.types import EngineStatus
from tests.gateway.ledger.rows import record as ledger_record

P = "hybrid_gateway_"


# A local answer of 12 + 30 tokens; tests override what they look at.
_LOCAL = {
    "request_id": "req-0001",
    "started_at": 1_700_000_000.0,
    "prompt_tokens": 12,
    "local_prompt_tokens": 12,
    "local_completion_tokens": 30,
    "local_seconds": 0.8,
    "ttft_seconds": 0.05,
    "total_seconds": 0.9,
}


def _record(**changes: Any) -> LedgerRecord:
    return ledger_record(**{**_LOCAL, **changes})


def _observe(
    metrics: GatewayMetrics,
    record: LedgerRecord,
    *,
    cloud: float = 0.0,
    local: float = 0.0,
    counterfactual: float = 0.0,
    savings: float = 0.0,
) -> None:
    metrics.observe(
        record,
        cloud_usd=cloud,
        local_usd=local,
        counterfactual_usd=counterfactual,
        savings_usd=savings,
    )


def _value(metrics: GatewayMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(P + name, labels)


def _requests(
    metrics: GatewayMetrics, route: str, reason: str, status: str, endpoint: str
) -> float | None:
    labels = {"route": route, "reason": reason, "status": status, "endpoint": endpoint}
    return _value(metrics, "requests_total", **labels)


def _samples(metrics: GatewayMetrics, accept: str | None = None) -> dict[str, list[Sample]]:
    body, _ = metrics.render(accept)
    return {
        family.name: list(family.samples)
        for family in text_string_to_metric_families(body.decode())
    }


class Live:
    """Mutable state behind the bound callbacks, changed between scrapes."""

    def __init__(self) -> None:
        self.status = EngineStatus(
            loaded=True, running=0, waiting=0, max_waiting=4, tokens_per_second=0.0
        )
        self.breaker: dict[str, Any] = {
            "state": "closed",
            "consecutive_failures": 0,
            "failure_threshold": 5,
        }
        self.ledger = (0, 0)

    def engine_status(self) -> EngineStatus:
        return self.status

    def breaker_state(self) -> dict[str, Any]:
        return self.breaker

    def ledger_stats(self) -> tuple[int, int]:
        return self.ledger


@pytest.fixture
def metrics() -> GatewayMetrics:
    return GatewayMetrics()


def test_requests_are_counted_by_route_reason_status_and_endpoint(
    metrics: GatewayMetrics,
) -> None:
    _observe(metrics, _record())
    _observe(metrics, _record())
    _observe(metrics, _record(endpoint="text", route="cloud", reason="long-prompt"))
    _observe(metrics, _record(route=None, reason=None, status=400, error="invalid_request"))
    _observe(metrics, _record(status=499, error="client_disconnected"))

    assert _requests(metrics, "local", "default", "200", "chat") == 2.0
    assert _requests(metrics, "cloud", "long-prompt", "200", "text") == 1.0
    assert _requests(metrics, "none", "none", "400", "chat") == 1.0
    assert _requests(metrics, "local", "default", "499", "chat") == 1.0


def test_tokens_costs_and_cloud_attempts(metrics: GatewayMetrics) -> None:
    _observe(metrics, _record(local_prompt_tokens=10, local_completion_tokens=20), local=0.0001)
    _observe(
        metrics,
        _record(
            route="cloud",
            local_prompt_tokens=0,
            local_completion_tokens=0,
            cloud_prompt_tokens=100,
            cloud_completion_tokens=50,
            cloud_attempts=3,
        ),
        cloud=0.002,
        counterfactual=0.002,
    )
    _observe(
        metrics,
        _record(
            route="local->cloud",
            local_prompt_tokens=7,
            local_completion_tokens=8,
            cloud_prompt_tokens=9,
            cloud_completion_tokens=11,
            cloud_attempts=1,
        ),
        cloud=0.001,
        local=0.0002,
        counterfactual=0.001,
        savings=-0.0002,
    )

    assert _value(metrics, "tokens_total", side="local", kind="prompt") == 17.0
    assert _value(metrics, "tokens_total", side="local", kind="completion") == 28.0
    assert _value(metrics, "tokens_total", side="cloud", kind="prompt") == 109.0
    assert _value(metrics, "tokens_total", side="cloud", kind="completion") == 61.0
    assert _value(metrics, "cloud_cost_usd_total") == pytest.approx(0.003)
    assert _value(metrics, "local_cost_usd_total") == pytest.approx(0.0003)
    assert _value(metrics, "all_cloud_counterfactual_usd_total") == pytest.approx(0.003)
    assert _value(metrics, "cloud_attempts_total") == 4.0
    assert _value(metrics, "cloud_retries_total") == 2.0


def test_negative_savings_go_to_their_own_counter(metrics: GatewayMetrics) -> None:
    _observe(metrics, _record(), counterfactual=0.01, savings=0.01)
    _observe(metrics, _record(), counterfactual=0.02, savings=0.015)
    _observe(metrics, _record(route="local->cloud"), cloud=0.01, savings=-0.004)
    _observe(metrics, _record(), savings=0.0)

    assert _value(metrics, "savings_usd_total") == pytest.approx(0.025)
    assert _value(metrics, "overspend_usd_total") == pytest.approx(0.004)


def test_a_negative_cost_is_refused_before_anything_is_counted(metrics: GatewayMetrics) -> None:
    with pytest.raises(ValueError, match="negative"):
        _observe(metrics, _record(cloud_attempts=2), cloud=-0.001)

    assert _value(metrics, "cloud_attempts_total") == 0.0
    assert _requests(metrics, "local", "default", "200", "chat") is None


def test_histograms_put_observations_in_cumulative_buckets(metrics: GatewayMetrics) -> None:
    for first_byte, total in ((0.005, 0.2), (0.3, 2.0), (7.0, 45.0), (None, 0.001)):
        _observe(metrics, _record(ttft_seconds=first_byte, total_seconds=total))
    _observe(metrics, _record(route="cloud", ttft_seconds=0.8, total_seconds=3.0))

    def ttft(le: str, route: str = "local") -> float | None:
        return _value(metrics, "time_to_first_token_seconds_bucket", route=route, le=le)

    # None (no first byte) is not an observation.
    assert ttft("0.01") == 1.0
    assert ttft("0.25") == 1.0
    assert ttft("0.5") == 2.0
    assert ttft("5.0") == 2.0
    assert ttft("10.0") == 3.0
    assert ttft("60.0") == 3.0
    assert ttft("+Inf") == 3.0
    assert _value(metrics, "time_to_first_token_seconds_count", route="local") == 3.0
    assert _value(metrics, "time_to_first_token_seconds_sum", route="local") == pytest.approx(7.305)
    assert ttft("0.5", route="cloud") == 0.0
    assert ttft("1.0", route="cloud") == 1.0

    def duration(le: str) -> float | None:
        return _value(metrics, "request_duration_seconds_bucket", route="local", le=le)

    assert duration("0.01") == 1.0
    assert duration("0.25") == 2.0
    assert duration("2.5") == 3.0
    assert duration("30.0") == 3.0
    assert duration("60.0") == 4.0
    assert _value(metrics, "request_duration_seconds_count", route="local") == 4.0
    # Every route has its series from the start, so rate() sees the first request.
    assert _value(metrics, "request_duration_seconds_count", route="none") == 0.0


def test_escalations_and_degraded_answers(metrics: GatewayMetrics) -> None:
    _observe(metrics, _record(route="local->cloud", reason="reasoning", cloud_attempts=1))
    _observe(metrics, _record(route="local->cloud", reason="reasoning", cloud_attempts=1))
    _observe(metrics, _record(route="local->cloud", reason="code", cloud_attempts=1))
    _observe(metrics, _record(route="local", reason="reasoning", degraded="cloud-unavailable"))
    _observe(metrics, _record(route="local", reason="code", degraded="cloud-error"))
    _observe(metrics, _record(route="local", reason="code", degraded="cloud-error"))

    assert _value(metrics, "escalations_total", reason="reasoning") == 2.0
    assert _value(metrics, "escalations_total", reason="code") == 1.0
    assert _value(metrics, "degraded_total", why="cloud-unavailable") == 1.0
    assert _value(metrics, "degraded_total", why="cloud-error") == 2.0


def test_text_exposition_parses_with_the_expected_types(metrics: GatewayMetrics) -> None:
    live = Live()
    metrics.bind(
        engine_status=live.engine_status,
        breaker_state=live.breaker_state,
        ledger_stats=live.ledger_stats,
    )
    _observe(metrics, _record(), cloud=0.001, counterfactual=0.002, savings=0.001)

    body, content_type = metrics.render()
    assert content_type == "text/plain; version=0.0.4; charset=utf-8"
    types = {f.name: f.type for f in text_string_to_metric_families(body.decode())}
    expected = {
        "requests": "counter",
        "time_to_first_token_seconds": "histogram",
        "request_duration_seconds": "histogram",
        "tokens": "counter",
        "cloud_cost_usd": "counter",
        "local_cost_usd": "counter",
        "all_cloud_counterfactual_usd": "counter",
        "savings_usd": "counter",
        "overspend_usd": "counter",
        "escalations": "counter",
        "degraded": "counter",
        "cloud_attempts": "counter",
        "cloud_retries": "counter",
        "local_model_loaded": "gauge",
        "local_requests_running": "gauge",
        "local_requests_waiting": "gauge",
        "local_requests_max_waiting": "gauge",
        "local_decode_tokens_per_second": "gauge",
        "cloud_configured": "gauge",
        "cloud_circuit_state": "gauge",
        "cloud_consecutive_failures": "gauge",
        "ledger_queue_depth": "gauge",
        "ledger_dropped_records": "counter",
    }
    assert {name: types.get(P + name) for name in expected} == expected

    samples = _samples(metrics)
    requests = [s for s in samples[P + "requests"] if s.name == P + "requests_total"]
    assert requests == [
        Sample(
            P + "requests_total",
            {"route": "local", "reason": "default", "status": "200", "endpoint": "chat"},
            1.0,
        )
    ]
    assert [s.value for s in samples[P + "savings_usd"] if s.name.endswith("_total")] == [0.001]


def test_openmetrics_is_served_when_asked_for(metrics: GatewayMetrics) -> None:
    _observe(metrics, _record())
    body, content_type = metrics.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text; version=1.0.0")
    assert body.endswith(b"# EOF\n")


def test_live_state_is_read_at_scrape_time(metrics: GatewayMetrics) -> None:
    live = Live()
    assert _value(metrics, "local_requests_running") is None  # nothing bound yet
    metrics.bind(
        engine_status=live.engine_status,
        breaker_state=live.breaker_state,
        ledger_stats=live.ledger_stats,
    )

    def circuit() -> dict[str, float | None]:
        states = ("closed", "half_open", "open")
        return {s: _value(metrics, "cloud_circuit_state", state=s) for s in states}

    assert _value(metrics, "local_requests_running") == 0.0
    assert _value(metrics, "local_decode_tokens_per_second") == 0.0
    assert circuit() == {"closed": 1.0, "half_open": 0.0, "open": 0.0}
    assert _value(metrics, "ledger_queue_depth") == 0.0

    live.status = EngineStatus(
        loaded=True, running=1, waiting=3, max_waiting=4, tokens_per_second=41.5
    )
    live.breaker = {"state": "open", "consecutive_failures": 5, "retry_in_s": 12.0}
    live.ledger = (17, 2)
    assert _value(metrics, "local_requests_running") == 1.0
    assert _value(metrics, "local_requests_waiting") == 3.0
    assert _value(metrics, "local_requests_max_waiting") == 4.0
    assert _value(metrics, "local_decode_tokens_per_second") == 41.5
    assert circuit() == {"closed": 0.0, "half_open": 0.0, "open": 1.0}
    assert _value(metrics, "cloud_consecutive_failures") == 5.0
    assert _value(metrics, "ledger_queue_depth") == 17.0
    assert _value(metrics, "ledger_dropped_records_total") == 2.0

    live.breaker = {"state": "half_open", "consecutive_failures": 5, "probe_in_flight": True}
    assert circuit() == {"closed": 0.0, "half_open": 1.0, "open": 0.0}


def test_without_cloud_or_ledger_their_series_are_absent(metrics: GatewayMetrics) -> None:
    live = Live()
    metrics.bind(engine_status=live.engine_status, breaker_state=None, ledger_stats=None)

    samples = _samples(metrics)
    assert _value(metrics, "cloud_configured") == 0.0
    assert samples.get(P + "cloud_circuit_state", []) == []
    assert samples.get(P + "ledger_queue_depth", []) == []
    assert _value(metrics, "local_model_loaded") == 1.0


def test_a_failing_source_drops_only_its_own_series(
    metrics: GatewayMetrics, caplog: pytest.LogCaptureFixture
) -> None:
    live = Live()

    def broken() -> dict[str, Any]:
        raise RuntimeError("breaker gone")

    metrics.bind(
        engine_status=live.engine_status, breaker_state=broken, ledger_stats=live.ledger_stats
    )
    _observe(metrics, _record())

    with caplog.at_level(logging.WARNING, logger="gateway.metrics"):
        samples = _samples(metrics)
    assert samples.get(P + "cloud_circuit_state", []) == []
    assert _value(metrics, "cloud_configured") == 1.0
    assert _value(metrics, "local_requests_running") == 0.0
    assert _value(metrics, "ledger_queue_depth") == 0.0
    assert samples[P + "requests"]
    assert "cloud circuit state" in caplog.text


def test_rebinding_replaces_the_sources(metrics: GatewayMetrics) -> None:
    first, second = Live(), Live()
    second.status = dataclasses.replace(second.status, waiting=2)
    metrics.bind(engine_status=first.engine_status, breaker_state=None, ledger_stats=None)
    metrics.bind(engine_status=second.engine_status, breaker_state=None, ledger_stats=None)
    assert _value(metrics, "local_requests_waiting") == 2.0


def test_two_instances_do_not_share_state() -> None:
    one, two = GatewayMetrics(), GatewayMetrics()
    live = Live()
    one.bind(engine_status=live.engine_status, breaker_state=None, ledger_stats=None)
    _observe(one, _record(), cloud=0.5)
    _observe(one, _record(), cloud=0.5)
    _observe(two, _record())

    labels = {"route": "local", "reason": "default", "status": "200", "endpoint": "chat"}
    assert _value(one, "requests_total", **labels) == 2.0
    assert _value(two, "requests_total", **labels) == 1.0
    assert _value(one, "cloud_cost_usd_total") == 1.0
    assert _value(two, "cloud_cost_usd_total") == 0.0
    assert _value(two, "local_requests_running") is None
    assert one.registry is not two.registry


def test_no_label_carries_a_request_id_model_or_key(metrics: GatewayMetrics) -> None:
    request_id = "req-canary-7f3a9c"
    record = _record(
        request_id=request_id,
        model="canary-model-id",
        key_id="canary-key-id",
        error="canary-error-code",
        privacy_match="canary-pattern",
        cloud_model="canary-cloud-model",
        route="local->cloud",
        degraded=None,
    )
    _observe(metrics, record)
    _observe(metrics, dataclasses.replace(record, route="local", degraded="cloud-error"))

    for accept in (None, "application/openmetrics-text; version=1.0.0"):
        body, _ = metrics.render(accept)
        assert b"canary" not in body
        label_values = {
            value
            for samples in _samples(metrics, accept).values()
            for sample in samples
            for value in sample.labels.values()
        }
        assert request_id not in label_values


@pytest.fixture
def client(metrics: GatewayMetrics) -> Iterator[TestClient]:
    class Holder:
        def __init__(self, metrics: GatewayMetrics) -> None:
            self.metrics = metrics

    holder = Holder(metrics)

    async def services() -> Holder:
        return holder

    app = FastAPI()
    app.include_router(router)
    app.dependency_overrides[get_services] = services
    with TestClient(app) as test_client:
        yield test_client


def test_the_route_serves_the_prometheus_text_format(
    client: TestClient, metrics: GatewayMetrics
) -> None:
    _observe(metrics, _record())

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    assert families[P + "requests"].samples[0].value == 1.0


def test_the_route_negotiates_openmetrics(client: TestClient) -> None:
    response = client.get(
        "/metrics", headers={"accept": "application/openmetrics-text; version=1.0.0"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/openmetrics-text")


def test_the_route_is_not_in_the_openapi_schema(client: TestClient) -> None:
    assert "/metrics" not in client.get("/openapi.json").json()["paths"]


def test_every_request_observed_is_in_the_next_scrape(metrics: GatewayMetrics) -> None:
    chat = b'endpoint="chat",reason="default",route="local",status="200"}'
    for _ in range(3):
        _observe(metrics, _record())
    assert chat + b" 3.0" in metrics.render()[0]
    for _ in range(2):
        _observe(metrics, _record())
    body, _ = metrics.render()
    assert chat + b" 5.0" in body
    assert b'hybrid_gateway_request_duration_seconds_count{route="local"} 5.0' in body


def test_a_record_with_an_unknown_route_is_refused_before_anything_is_counted(
    metrics: GatewayMetrics,
) -> None:
    _observe(metrics, _record())
    with pytest.raises(ValueError, match="unknown route"):
        _observe(metrics, _record(route="not-a-route", total_seconds=7.0, cloud_attempts=3))
    _observe(metrics, _record())
    assert _requests(metrics, "local", "default", "200", "chat") == 2
    assert _value(metrics, "request_duration_seconds_sum", route="local") == pytest.approx(1.8)
    assert _value(metrics, "cloud_attempts_total") == 0.0
    assert "not-a-route" not in metrics.render()[0].decode()


def test_no_reason_and_a_rule_named_none_share_one_series(metrics: GatewayMetrics) -> None:
    _observe(metrics, _record(reason=None))
    _observe(metrics, _record(reason="none"))
    series = [s for s in _samples(metrics)[P + "requests"] if s.name == P + "requests_total"]
    assert [(s.labels["reason"], s.value) for s in series] == [("none", 2.0)]
