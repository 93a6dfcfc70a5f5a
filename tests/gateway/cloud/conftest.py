"""Fakes for the cloud client: a scripted upstream behind httpx.MockTransport, a fake clock."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest

from gateway.cloud import CloudClient
from gateway.settings import CloudSettings

CANARY_KEY = "sk-canary-5f1c0ffee0ddba11"
BASE_URL = "https://cloud.test/v1"

Reply = Callable[[httpx.Request], httpx.Response | Awaitable[httpx.Response]]


class FakeClock:
    """Monotonic time that moves only when told to (or when the fake sleep sleeps)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class FakeSleep:
    clock: FakeClock
    delays: list[float] = field(default_factory=list)

    async def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.clock.advance(seconds)


class Upstream:
    """A scripted OpenAI-compatible server: each request gets the next reply in the script."""

    def __init__(self) -> None:
        self.script: list[Reply] = []
        self.requests: list[httpx.Request] = []

    def then(self, *replies: Reply) -> Upstream:
        self.script.extend(replies)
        return self

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [json.loads(request.content) for request in self.requests]

    async def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        assert self.script, f"unexpected request #{len(self.requests)}"
        result = self.script.pop(0)(request)
        if not isinstance(result, httpx.Response):
            result = await result
        return result

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)


class HangingBody(httpx.AsyncByteStream):
    """Sends ``head``, then nothing; records whether the response was closed."""

    def __init__(self, head: bytes) -> None:
        self.head = head
        self.closed = False
        self.reading = asyncio.Event()

    async def __aiter__(self) -> AsyncIterator[bytes]:
        self.reading.set()
        if self.head:
            yield self.head
        await asyncio.sleep(3600)

    async def aclose(self) -> None:
        self.closed = True


def completion_body(content: str = "Hello!", *, usage: bool = True) -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-up",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": content},
                "finish_reason": "stop",
            }
        ],
    }
    if usage:
        body["usage"] = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
    return body


def chunk(content: str | None, *, finish: str | None = None) -> dict[str, Any]:
    delta = {} if content is None else {"content": content}
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        "usage": None,
    }


def usage_chunk(prompt: int = 9, completion: int = 3) -> dict[str, Any]:
    return {
        "id": "chatcmpl-up",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [],
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
    }


def sse(events: Iterable[dict[str, Any] | str]) -> bytes:
    parts = [e if isinstance(e, str) else json.dumps(e) for e in events]
    return b"".join(f"data: {part}\n\n".encode() for part in parts)


def ok(body: dict[str, Any]) -> Reply:
    return lambda request: httpx.Response(200, json=body)


def status(code: int, body: Any = None, headers: dict[str, str] | None = None) -> Reply:
    body = body if body is not None else {"error": {"message": f"status {code}", "type": "x"}}
    return lambda request: httpx.Response(code, json=body, headers=headers)


def streamed(data: bytes, *, pieces: int = 1) -> Reply:
    """An SSE response delivered in ``pieces`` separate reads."""

    async def body() -> AsyncIterator[bytes]:
        size = max(1, -(-len(data) // pieces))
        for start in range(0, len(data), size):
            yield data[start : start + size]

    headers = {"content-type": "text/event-stream"}
    return lambda request: httpx.Response(200, content=body(), headers=headers)


def raises(exc_type: type[httpx.TransportError], message: str = "boom") -> Reply:
    def reply(request: httpx.Request) -> httpx.Response:
        raise exc_type(message, request=request)

    return reply


def dripping(data: bytes, interval_s: float) -> Reply:
    """An upstream that sends one byte every ``interval_s`` (never trips a read timeout)."""

    async def body() -> AsyncIterator[bytes]:
        for byte in data:
            await asyncio.sleep(interval_s)
            yield bytes([byte])

    headers = {"content-type": "text/event-stream"}
    return lambda request: httpx.Response(200, content=body(), headers=headers)


def cloud_settings(**overrides: Any) -> CloudSettings:
    values: dict[str, Any] = {"base_url": BASE_URL, "api_key": CANARY_KEY}
    values.update(overrides)
    return CloudSettings(**values)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sleep(clock: FakeClock) -> FakeSleep:
    return FakeSleep(clock)


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


MakeClient = Callable[..., CloudClient]


@pytest.fixture
async def make_client(
    upstream: Upstream, clock: FakeClock, sleep: FakeSleep
) -> AsyncIterator[MakeClient]:
    clients: list[CloudClient] = []

    def make(**overrides: Any) -> CloudClient:
        client = CloudClient(
            cloud_settings(**overrides),
            transport=upstream.transport(),
            clock=clock,
            sleep=sleep,
            rng=random.Random(7),
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        await client.aclose()
