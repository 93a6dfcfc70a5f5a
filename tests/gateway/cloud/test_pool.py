"""The bound on cloud requests in flight (gateway.cloud.pool.RequestSlots)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from gateway.errors import CloudUnavailableError
from tests.gateway.cloud.conftest import (
    HangingBody,
    MakeClient,
    Reply,
    Upstream,
    chunk,
    completion_body,
    ok,
    sse,
)

CHAT = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}]}


class Gate:
    """Replies that wait for ``open`` and count the requests in flight."""

    def __init__(self) -> None:
        self.open = asyncio.Event()
        self.in_flight = 0
        self.most = 0

    def reply(self) -> Reply:
        async def answer(request: httpx.Request) -> httpx.Response:
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
            try:
                await self.open.wait()
            finally:
                self.in_flight -= 1
            return httpx.Response(200, json=completion_body())

        return answer

    async def until(self, in_flight: int) -> None:
        async with asyncio.timeout(5):
            while self.in_flight < in_flight:
                await asyncio.sleep(0)


async def test_max_connections_bounds_concurrent_requests(
    make_client: MakeClient, upstream: Upstream
) -> None:
    gate = Gate()
    upstream.then(*(gate.reply() for _ in range(20)))
    client = make_client(max_connections=3, connect_timeout_s=30)
    calls = [
        asyncio.ensure_future(client.complete("chat", dict(CHAT), response_model="hybrid"))
        for _ in range(20)
    ]
    await gate.until(3)
    for _ in range(20):
        await asyncio.sleep(0)
    assert gate.in_flight == 3
    gate.open.set()
    results = await asyncio.gather(*calls)
    assert [result.attempts for result in results] == [1] * 20
    assert gate.most == 3
    assert client._slots.in_flight == 0


async def test_full_pool_waits_then_is_503_not_an_upstream_failure(
    make_client: MakeClient, upstream: Upstream
) -> None:
    gate = Gate()
    upstream.then(gate.reply(), ok(completion_body()))
    client = make_client(max_connections=1, connect_timeout_s=0.05, breaker_failures=1)
    first = asyncio.ensure_future(client.complete("chat", dict(CHAT), response_model="hybrid"))
    await gate.until(1)
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(CloudUnavailableError) as info:
        await client.complete("chat", dict(CHAT), response_model="hybrid")
    assert loop.time() - started >= 0.05
    assert info.value.headers == {"Retry-After": "1"}
    assert isinstance(info.value.__cause__, httpx.PoolTimeout)
    assert client.breaker_state()["state"] == "closed"
    assert len(upstream.requests) == 1
    gate.open.set()
    await first
    # The slot is free again.
    await client.complete("chat", dict(CHAT), response_model="hybrid")


async def test_a_waiting_request_gets_the_freed_connection(
    make_client: MakeClient, upstream: Upstream
) -> None:
    gate = Gate()
    upstream.then(gate.reply(), ok(completion_body()))
    client = make_client(max_connections=1, connect_timeout_s=30)
    first = asyncio.ensure_future(client.complete("chat", dict(CHAT), response_model="hybrid"))
    await gate.until(1)
    second = asyncio.ensure_future(client.complete("chat", dict(CHAT), response_model="hybrid"))
    await asyncio.sleep(0.01)
    assert not second.done()
    gate.open.set()
    await asyncio.gather(first, second)
    assert gate.most == 1


async def test_cancelling_mid_stream_releases_the_slot(
    make_client: MakeClient, upstream: Upstream
) -> None:
    body = HangingBody(sse([chunk("one")]))
    upstream.then(lambda request: httpx.Response(200, stream=body), ok(completion_body()))
    client = make_client(max_connections=1, connect_timeout_s=0.05)
    stream = client.stream("chat", {**CHAT, "stream": True}, response_model="hybrid")

    async def read_all() -> None:
        async for _ in stream:
            pass

    task = asyncio.ensure_future(read_all())
    await asyncio.wait_for(body.reading.wait(), timeout=5)
    for _ in range(5):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body.closed
    assert client._slots.in_flight == 0
    await client.complete("chat", dict(CHAT), response_model="hybrid")


async def test_cancelling_mid_request_releases_the_slot(
    make_client: MakeClient, upstream: Upstream
) -> None:
    gate = Gate()
    upstream.then(gate.reply(), ok(completion_body()))
    client = make_client(max_connections=1, connect_timeout_s=0.05)
    task = asyncio.ensure_future(client.complete("chat", dict(CHAT), response_model="hybrid"))
    await gate.until(1)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert gate.in_flight == 0
    assert client._slots.in_flight == 0
    await client.complete("chat", dict(CHAT), response_model="hybrid")
    assert client.breaker_state()["consecutive_failures"] == 0


async def test_a_busy_request_finishes_after_aclose_and_later_ones_are_refused(
    make_client: MakeClient, upstream: Upstream
) -> None:
    gate = Gate()
    upstream.then(ok(completion_body()), gate.reply())
    client = make_client()
    await client.complete("chat", dict(CHAT), response_model="hybrid")
    busy = asyncio.ensure_future(client.complete("chat", dict(CHAT), response_model="hybrid"))
    await gate.until(1)
    await client.aclose()
    gate.open.set()
    await busy
    with pytest.raises(RuntimeError, match="closed"):
        await client.complete("chat", dict(CHAT), response_model="hybrid")
