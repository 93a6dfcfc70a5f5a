"""200 requests at once against ``hybrid-gateway serve`` with the real model.

Every answer must be a whole 200, or a 429/503 in OpenAI's error shape with
Retry-After; /healthz must keep answering (polled on new connections
throughout); the server's memory must stay bounded; the process must live on;
and the ledger must hold one record per request. With a cloud and the
latency-first policy, requests may go to the cloud instead, but never one that
matches the privacy floor: those wait for the local model or get 503.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from tests.reliability.conftest import Results, Upstream
from tests.reliability.harness import GatewayProcess, wait_for
from tests.reliability.load import Answer, HealthPoller, distribution, send_all

pytestmark = pytest.mark.model

BURST = 200
MAX_TOKENS = 4
# Generous: the model, its KV cache and 200 connections' worth of buffers are far below it.
RSS_GROWTH_LIMIT_MIB = 256.0
# A second burst must not keep growing the process: a leak would show here.
RSS_REPEAT_LIMIT_MIB = 48.0
HEALTHZ_TIMEOUT_S = 5.0
PRIVATE = "ada.lovelace@example.com"  # the email detector of every shipped policy


def _burst(private_every: int = 0) -> list[tuple[str, dict[str, Any]]]:
    """Half streamed, half not; a few legacy completions; every Nth one carries an email."""
    requests: list[tuple[str, dict[str, Any]]] = []
    for i in range(BURST):
        stream = i % 2 == 0
        private = private_every > 0 and i % private_every == 0
        text = f"Write to {PRIVATE} about item {i}." if private else f"Name a colour, item {i}."
        body: dict[str, Any] = {"model": "hybrid", "max_tokens": MAX_TOKENS, "stream": stream}
        if i % 10 == 5:
            requests.append(("/v1/completions", {**body, "prompt": text}))
        else:
            requests.append(
                ("/v1/chat/completions", {**body, "messages": [{"role": "user", "content": text}]})
            )
    return requests


def _check_answer(answer: Answer) -> None:
    assert answer.failure is None, answer.failure
    assert answer.status in (200, 429, 503), (answer.status, answer.body)
    if answer.status == 200:
        assert answer.complete, (answer.body, answer.events[-3:])
        return
    retry_after = answer.headers.get("retry-after")
    assert retry_after is not None and int(retry_after) >= 1, answer.headers
    assert answer.body is not None
    error = answer.body["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["code"] in ("queue_full", "cloud_unavailable", "upstream_rate_limited")


@dataclass
class Burst:
    answers: list[Answer]
    request_ids: list[str]
    poller: HealthPoller
    seconds: float


def _run_burst(gateway: GatewayProcess, requests: list[tuple[str, dict[str, Any]]]) -> Burst:
    run = uuid.uuid4().hex[:8]
    ids = [f"burst-{run}-{i}" for i in range(len(requests))]
    with HealthPoller(gateway.url, gateway.pid, timeout=HEALTHZ_TIMEOUT_S) as poller:
        started = time.monotonic()
        answers = asyncio.run(send_all(gateway.url, requests, request_ids=ids))
        seconds = time.monotonic() - started
    return Burst(answers, ids, poller, seconds)


def _ledger_statuses(gateway: GatewayProcess, request_ids: list[str]) -> Counter[int]:
    """The status of each request's ledger record; exactly one record each."""
    wanted = set(request_ids)

    def enough() -> list[dict[str, Any]] | None:
        rows = [row for row in gateway.ledger_rows() if row["request_id"] in wanted]
        return rows if len(rows) >= len(wanted) else None

    rows = wait_for(enough, f"{len(wanted)} ledger records")
    assert sorted(row["request_id"] for row in rows) == sorted(request_ids)
    return Counter(row["status"] for row in rows)


def test_overload_on_the_local_route(local_gateway: GatewayProcess, results: Results) -> None:
    gateway = local_gateway
    gateway.wait_idle()
    # One answer first, so the measurement starts from a warm process.
    warm = asyncio.run(send_all(gateway.url, _burst()[:1]))
    assert warm[0].complete
    gateway.wait_idle()
    memory_before = gateway.memory()

    first = _run_burst(gateway, _burst())
    gateway.wait_idle()
    memory_after = gateway.memory()
    second = _run_burst(gateway, _burst())
    gateway.wait_idle()
    memory_again = gateway.memory()

    answers = first.answers + second.answers
    for answer in answers:
        _check_answer(answer)
        if answer.status == 200:
            assert answer.headers["x-hybrid-route"] == "local"
    statuses = Counter(a.status for a in answers)
    assert statuses[200] > 0
    assert statuses[503] > 0, "the burst never filled the queue: not an overload"
    for burst in (first, second):
        assert not burst.poller.failures, burst.poller.failures[:5]
        assert len(burst.poller.latencies) >= 3
    assert gateway.alive
    assert httpx.get(f"{gateway.url}/readyz", timeout=10).json()["status"] == "ready"
    peak = max(first.poller.peak_rss_mib, second.poller.peak_rss_mib)
    assert peak - memory_before.rss_mib < RSS_GROWTH_LIMIT_MIB
    assert memory_again.rss_mib - memory_after.rss_mib < RSS_REPEAT_LIMIT_MIB
    # One record per request, with the status the client saw.
    assert _ledger_statuses(gateway, first.request_ids + second.request_ids) == statuses

    results.record(
        "overload, local route",
        requests=f"2 bursts of {BURST} (half streamed), max_tokens={MAX_TOKENS}",
        statuses=distribution(answers),
        first_burst_s=round(first.seconds, 1),
        healthz_polls=len(first.poller.latencies) + len(second.poller.latencies),
        healthz_max_ms=round(max(first.poller.max_latency_ms, second.poller.max_latency_ms), 1),
        rss_before_mib=round(memory_before.rss_mib, 1),
        rss_peak_mib=round(peak, 1),
        rss_after_first_mib=round(memory_after.rss_mib, 1),
        rss_after_second_mib=round(memory_again.rss_mib, 1),
        rss_high_water_mib=round(memory_again.peak_mib, 1),
        retry_after_s=sorted({int(a.headers["retry-after"]) for a in answers if a.status == 503}),
        ledger_records=len(answers),
    )


def test_overload_with_a_cloud_offloads_but_never_private_requests(
    hybrid_gateway: GatewayProcess, upstream: Upstream, results: Results
) -> None:
    gateway = hybrid_gateway
    gateway.wait_idle()
    calls_before = len(upstream.recorder.snapshot())
    requests = _burst(private_every=4)

    burst = _run_burst(gateway, requests)
    answers, poller = burst.answers, burst.poller
    gateway.wait_idle()

    routes: Counter[str] = Counter()
    private_outcomes: Counter[str] = Counter()
    for (_, body), answer in zip(requests, answers, strict=True):
        _check_answer(answer)
        private = PRIVATE in str(body)
        route = answer.headers.get("x-hybrid-route", "-") if answer.status == 200 else "-"
        routes[f"{answer.status} {route}"] += 1
        if private:
            private_outcomes[f"{answer.status} {answer.headers.get('x-hybrid-reason', '')}"] += 1
            if answer.status == 200:
                assert route == "local"
                assert answer.headers["x-hybrid-reason"] == "privacy-floor"
            else:
                assert answer.error_code == "queue_full"
        else:
            # The load rule sends what the full queue cannot take to the cloud.
            assert answer.status == 200, (answer.status, answer.body)
    calls = upstream.recorder.snapshot()[calls_before:]
    assert not [c for c in calls if PRIVATE in c.text], "a private request reached the cloud"
    cloud_answers = routes.get("200 cloud", 0) + routes.get("200 local->cloud", 0)
    assert len(calls) >= cloud_answers
    assert not poller.failures, poller.failures[:5]
    assert gateway.alive
    in_ledger = _ledger_statuses(gateway, burst.request_ids)
    assert in_ledger == Counter(a.status for a in answers)

    results.record(
        "overload, latency-first policy with a cloud",
        requests=f"{BURST} (half streamed, 1 in 4 with an email address), max_tokens={MAX_TOKENS}",
        statuses_and_routes=dict(sorted(routes.items())),
        private_requests=dict(sorted(private_outcomes.items())),
        upstream_calls=len(calls),
        private_requests_at_upstream=0,
        burst_s=round(burst.seconds, 1),
        healthz_max_ms=round(poller.max_latency_ms, 1),
    )
