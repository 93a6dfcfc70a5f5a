from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.cloud import CloudClient
from gateway.errors import (
    CloudUnavailableError,
    InvalidRequestError,
    UpstreamError,
    UpstreamTimeoutError,
)
from tests.gateway.cloud.conftest import (
    FakeClock,
    HangingBody,
    MakeClient,
    Upstream,
    chunk,
    completion_body,
    ok,
    raises,
    sse,
    status,
    streamed,
)

CHAT = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}]}


async def fail_once(client: CloudClient) -> None:
    with pytest.raises((UpstreamError, UpstreamTimeoutError)):
        await client.complete("chat", dict(CHAT), response_model="hybrid")


@pytest.fixture
def client(make_client: MakeClient) -> CloudClient:
    # One attempt per request keeps the script short: each request = one failure.
    return make_client(max_attempts=1, breaker_failures=3, breaker_cooldown_s=30)


async def open_circuit(client: CloudClient, upstream: Upstream) -> None:
    upstream.then(status(500), raises(httpx.ConnectError), raises(httpx.ReadTimeout))
    for _ in range(3):
        await fail_once(client)


async def test_opens_after_consecutive_failures_and_fails_fast(
    client: CloudClient, upstream: Upstream, clock: FakeClock
) -> None:
    upstream.then(status(500), status(500))
    await fail_once(client)
    await fail_once(client)
    assert client.breaker_state() == {
        "state": "closed",
        "consecutive_failures": 2,
        "failure_threshold": 3,
    }
    upstream.then(status(500))
    await fail_once(client)
    assert client.breaker_state()["state"] == "open"

    clock.advance(10)
    with pytest.raises(CloudUnavailableError) as info:
        await client.complete("chat", dict(CHAT), response_model="hybrid")
    assert info.value.status_code == 503
    assert info.value.code == "cloud_unavailable"
    assert info.value.headers == {"Retry-After": "20"}
    with pytest.raises(CloudUnavailableError):
        client.stream("chat", dict(CHAT), response_model="hybrid")
    assert len(upstream.requests) == 3  # no network I/O while open
    assert client.breaker_state()["retry_in_s"] == 20


async def test_success_resets_the_count(client: CloudClient, upstream: Upstream) -> None:
    upstream.then(status(500), status(500), ok(completion_body()), status(500), status(500))
    await fail_once(client)
    await fail_once(client)
    await client.complete("chat", dict(CHAT), response_model="hybrid")
    await fail_once(client)
    await fail_once(client)
    assert client.breaker_state()["state"] == "closed"


async def test_client_errors_are_not_failures(client: CloudClient, upstream: Upstream) -> None:
    upstream.then(*[status(400)] * 4, status(404), status(422))
    for _ in range(6):
        with pytest.raises(InvalidRequestError):
            await client.complete("chat", dict(CHAT), response_model="hybrid")
    assert client.breaker_state() == {
        "state": "closed",
        "consecutive_failures": 0,
        "failure_threshold": 3,
    }


async def test_retried_request_counts_once(make_client: MakeClient, upstream: Upstream) -> None:
    client = make_client(max_attempts=3, breaker_failures=2)
    upstream.then(status(503), status(503), status(503))
    await fail_once(client)
    assert client.breaker_state()["consecutive_failures"] == 1


async def test_half_open_probe_success_closes(
    client: CloudClient, upstream: Upstream, clock: FakeClock
) -> None:
    await open_circuit(client, upstream)
    clock.advance(30)
    assert client.breaker_state()["state"] == "half_open"

    upstream.then(ok(completion_body()))
    await client.complete("chat", dict(CHAT), response_model="hybrid")

    assert client.breaker_state()["state"] == "closed"
    assert client.breaker_state()["consecutive_failures"] == 0


async def test_half_open_probe_failure_reopens(
    make_client: MakeClient, upstream: Upstream, clock: FakeClock
) -> None:
    client = make_client(max_attempts=3, breaker_failures=1, breaker_cooldown_s=30)
    upstream.then(*[status(503)] * 3)
    await fail_once(client)
    clock.advance(31)

    upstream.then(status(503), ok(completion_body()))
    await fail_once(client)

    assert len(upstream.requests) == 4  # the probe is a single attempt
    state = client.breaker_state()
    assert state["state"] == "open"
    assert state["retry_in_s"] == 30


async def test_only_one_probe_at_a_time(
    client: CloudClient, upstream: Upstream, clock: FakeClock
) -> None:
    await open_circuit(client, upstream)
    clock.advance(30)
    upstream.then(streamed(sse([chunk("x"), "[DONE]"])))

    probe = client.stream("chat", dict(CHAT), response_model="hybrid")
    await anext(probe)
    assert client.breaker_state() == {
        "state": "half_open",
        "consecutive_failures": 3,
        "failure_threshold": 3,
        "probe_in_flight": True,
    }
    with pytest.raises(CloudUnavailableError) as info:
        await client.complete("chat", dict(CHAT), response_model="hybrid")
    assert info.value.headers == {"Retry-After": "1"}

    assert [c async for c in probe] == []
    assert client.breaker_state()["state"] == "closed"


async def test_abandoned_probe_frees_the_slot(
    client: CloudClient, upstream: Upstream, clock: FakeClock
) -> None:
    await open_circuit(client, upstream)
    clock.advance(30)
    body = HangingBody(b"")
    upstream.then(lambda request: httpx.Response(200, stream=body))

    probe = client.stream("chat", dict(CHAT), response_model="hybrid")
    task = asyncio.ensure_future(anext(probe))
    await asyncio.wait_for(body.reading.wait(), timeout=5)
    assert client.breaker_state()["probe_in_flight"] is True
    task.cancel()  # the gateway's client went away before any answer
    with pytest.raises(asyncio.CancelledError):
        await task
    await probe.aclose()
    assert client.breaker_state()["probe_in_flight"] is False

    upstream.then(ok(completion_body()))
    await client.complete("chat", dict(CHAT), response_model="hybrid")
    assert client.breaker_state()["state"] == "closed"


async def test_stream_failure_counts(client: CloudClient, upstream: Upstream) -> None:
    upstream.then(*[streamed(sse([chunk("cut")]))] * 3)
    for _ in range(3):
        stream = client.stream("chat", dict(CHAT), response_model="hybrid")
        with pytest.raises(UpstreamError):
            async for _chunk in stream:
                pass
    assert client.breaker_state()["state"] == "open"
