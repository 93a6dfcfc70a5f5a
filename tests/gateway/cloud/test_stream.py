from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from gateway.cloud import CloudClient, CloudStream, CloudUsage
from gateway.errors import InvalidRequestError, UpstreamError, UpstreamTimeoutError
from gateway.settings import CloudSettings
from tests.gateway.cloud.conftest import (
    BASE_URL,
    CANARY_KEY,
    FakeSleep,
    HangingBody,
    MakeClient,
    Upstream,
    chunk,
    dripping,
    raises,
    sse,
    status,
    streamed,
    usage_chunk,
)

CHAT = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}], "stream": True}
WORDS = ["Hel", "lo", " there"]


def full_stream(*, usage: bool = True) -> bytes:
    events: list[dict[str, Any] | str] = [chunk(word) for word in WORDS]
    events.append(chunk(None, finish="stop"))
    if usage:
        events.append(usage_chunk(prompt=9, completion=3))
    events.append("[DONE]")
    return sse(events)


async def drain(stream: CloudStream) -> list[dict[str, Any]]:
    return [item async for item in stream]


def texts(chunks: list[dict[str, Any]]) -> list[str | None]:
    return [c["choices"][0]["delta"].get("content") for c in chunks]


async def test_relays_chunk_by_chunk_and_captures_usage(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.then(streamed(full_stream(), pieces=7))
    stream = make_client().stream("chat", dict(CHAT), response_model="hybrid")

    chunks = await drain(stream)

    assert texts(chunks) == [*WORDS, None]
    assert all(c["model"] == "hybrid" for c in chunks)
    assert all(c["choices"] for c in chunks)  # the usage-only chunk is not yielded
    assert stream.usage == CloudUsage(prompt_tokens=9, completion_tokens=3)
    assert stream.attempts == 1
    sent = upstream.bodies[0]
    assert sent["stream"] is True
    assert sent["stream_options"] == {"include_usage": True}
    assert sent["model"] == "gpt-4o-mini"
    assert upstream.requests[0].headers["authorization"] == f"Bearer {CANARY_KEY}"
    await stream.aclose()


async def test_chunks_arrive_before_the_stream_ends(upstream: Upstream) -> None:
    gate = asyncio.Event()

    async def body() -> AsyncIterator[bytes]:
        yield sse([chunk("first")])
        await gate.wait()
        yield sse([chunk(None, finish="stop"), "[DONE]"])

    upstream.then(lambda request: httpx.Response(200, content=body()))
    client = CloudClient(CloudSettings(base_url=BASE_URL), transport=upstream.transport())
    stream = client.stream("chat", dict(CHAT), response_model="hybrid")

    first = await asyncio.wait_for(anext(stream), timeout=2)
    assert first["choices"][0]["delta"]["content"] == "first"
    gate.set()
    assert len(await drain(stream)) == 1
    await client.aclose()


async def test_without_usage_usage_stays_none(make_client: MakeClient, upstream: Upstream) -> None:
    upstream.then(streamed(full_stream(usage=False)))
    stream = make_client().stream("chat", dict(CHAT), response_model="hybrid")
    assert len(await drain(stream)) == 4
    assert stream.usage is None


async def test_client_stream_options_are_kept(make_client: MakeClient, upstream: Upstream) -> None:
    upstream.then(streamed(full_stream()))
    payload = {**CHAT, "stream_options": {"include_usage": False, "x": 1}}
    await drain(make_client().stream("text", payload, response_model="hybrid"))
    assert upstream.bodies[0]["stream_options"] == {"include_usage": True, "x": 1}
    assert str(upstream.requests[0].url) == f"{BASE_URL}/completions"


async def test_sse_comments_and_multiline_framing(
    make_client: MakeClient, upstream: Upstream
) -> None:
    data = (
        b": keep-alive\r\n\r\nevent: message\r\nid: 1\r\ndata: "
        + sse([chunk("a")])[6:].replace(b"\n\n", b"\r\n\r\n")
        + b"data: [DONE]"  # no trailing blank line
    )
    upstream.then(streamed(data, pieces=5))
    chunks = await drain(make_client().stream("chat", dict(CHAT), response_model="hybrid"))
    assert texts(chunks) == ["a"]


async def test_errors_before_first_chunk_are_retried(
    make_client: MakeClient, upstream: Upstream, sleep: FakeSleep
) -> None:
    upstream.then(
        status(503),
        raises(httpx.ConnectError),
        streamed(full_stream()),
    )
    stream = make_client().stream("chat", dict(CHAT), response_model="hybrid")
    assert len(await drain(stream)) == 4
    assert stream.attempts == 3
    assert len(sleep.delays) == 2


async def test_cut_mid_stream_raises_after_yielded_chunks_and_is_not_retried(
    make_client: MakeClient, upstream: Upstream, sleep: FakeSleep
) -> None:
    upstream.then(streamed(sse([chunk("Hel"), chunk("lo")])), streamed(full_stream()))
    stream = make_client().stream("chat", dict(CHAT), response_model="hybrid")

    received: list[dict[str, Any]] = []
    with pytest.raises(UpstreamError, match=r"\[DONE\]"):
        async for item in stream:
            received.append(item)

    assert texts(received) == ["Hel", "lo"]
    assert len(upstream.requests) == 1
    assert sleep.delays == []
    assert [item async for item in stream] == []  # finished for good


async def test_connection_reset_mid_stream_is_upstream_error(
    make_client: MakeClient, upstream: Upstream
) -> None:
    async def body() -> AsyncIterator[bytes]:
        yield sse([chunk("Hel")])
        raise httpx.RemoteProtocolError("peer closed connection")

    upstream.then(lambda request: httpx.Response(200, content=body()), streamed(full_stream()))
    stream = make_client().stream("chat", dict(CHAT), response_model="hybrid")

    assert texts([await anext(stream)]) == ["Hel"]
    with pytest.raises(UpstreamError) as info:
        await anext(stream)
    assert isinstance(info.value.__cause__, httpx.RemoteProtocolError)
    assert len(upstream.requests) == 1


@pytest.mark.parametrize(
    "data",
    [
        b"data: {not json\n\n",
        b"data: [1, 2]\n\n",
        b'data: {"error": {"message": "overloaded"}}\n\n',
    ],
    ids=["json", "not-object", "in-band-error"],
)
async def test_malformed_stream_is_upstream_error(
    make_client: MakeClient, upstream: Upstream, data: bytes
) -> None:
    upstream.then(streamed(data))
    with pytest.raises(UpstreamError):
        await drain(make_client().stream("chat", dict(CHAT), response_model="hybrid"))
    assert len(upstream.requests) == 1


async def test_upstream_400_before_stream(make_client: MakeClient, upstream: Upstream) -> None:
    upstream.then(status(400, {"error": {"message": "bad stop", "param": "stop"}}))
    with pytest.raises(InvalidRequestError, match="bad stop"):
        await drain(make_client().stream("chat", dict(CHAT), response_model="hybrid"))


async def test_read_timeout_is_upstream_timeout(
    make_client: MakeClient, upstream: Upstream
) -> None:
    upstream.then(raises(httpx.ReadTimeout))
    with pytest.raises(UpstreamTimeoutError):
        await drain(make_client().stream("chat", dict(CHAT), response_model="hybrid"))
    assert len(upstream.requests) == 1


async def test_drip_feed_hits_the_total_deadline(upstream: Upstream) -> None:
    upstream.then(dripping(full_stream(), interval_s=0.02))
    client = CloudClient(
        CloudSettings(base_url=BASE_URL, total_timeout_s=0.3), transport=upstream.transport()
    )
    stream = client.stream("chat", dict(CHAT), response_model="hybrid")
    received: list[dict[str, Any]] = []
    with pytest.raises(UpstreamTimeoutError, match="0.3s"):
        async for item in stream:
            received.append(item)
    # The first chunk (about 190 bytes) arrives within the deadline only partly.
    assert len(received) <= 1
    await stream.aclose()
    await client.aclose()


async def test_aclose_closes_the_upstream_response(
    make_client: MakeClient, upstream: Upstream
) -> None:
    body = HangingBody(sse([chunk("one")]))
    upstream.then(lambda request: httpx.Response(200, stream=body))
    stream = make_client().stream("chat", dict(CHAT), response_model="hybrid")
    await anext(stream)
    await stream.aclose()
    await stream.aclose()  # idempotent
    assert body.closed


async def test_cancelling_the_reader_closes_the_upstream(
    make_client: MakeClient, upstream: Upstream
) -> None:
    body = HangingBody(b"")
    upstream.then(lambda request: httpx.Response(200, stream=body))
    client = make_client()
    stream = client.stream("chat", dict(CHAT), response_model="hybrid")
    task = asyncio.ensure_future(anext(stream))
    await asyncio.wait_for(body.reading.wait(), timeout=5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert body.closed
    await stream.aclose()
    assert client.breaker_state()["consecutive_failures"] == 0
