"""The API key goes into the Authorization header and nowhere else.

Runs against a real HTTP server on loopback so httpx's and httpcore's own
DEBUG logging (which MockTransport would bypass) is covered too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import traceback
from collections.abc import AsyncIterator
from typing import Any

import pytest

from gateway.cloud import CloudClient
from gateway.errors import GatewayError, InvalidRequestError, UpstreamError
from gateway.settings import CloudSettings
from tests.gateway.cloud.conftest import (
    CANARY_KEY,
    FakeClock,
    FakeSleep,
    chunk,
    completion_body,
    sse,
    usage_chunk,
)

CHAT = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}]}


def http_response(status: int, body: bytes, content_type: str = "application/json") -> bytes:
    head = (
        f"HTTP/1.1 {status} X\r\ncontent-type: {content_type}\r\n"
        f"content-length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


class LoopbackUpstream:
    """A minimal keep-alive HTTP/1.1 server answering from a script."""

    def __init__(self) -> None:
        self.replies: list[bytes] = []
        self.requests: list[bytes] = []
        self.connections = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.decode().split("\r\n"):
                    name, _, value = line.partition(":")
                    if name.lower() == "content-length":
                        length = int(value)
                self.requests.append(head + await reader.readexactly(length))
                writer.write(self.replies.pop(0))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


@pytest.fixture
async def loopback() -> AsyncIterator[tuple[LoopbackUpstream, str]]:
    upstream = LoopbackUpstream()
    server = await asyncio.start_server(upstream.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    yield upstream, f"http://127.0.0.1:{port}/v1"
    server.close()
    await server.wait_closed()


def leaks(text: str) -> bool:
    return CANARY_KEY in text or CANARY_KEY[3:] in text


def error_texts(exc: BaseException) -> str:
    parts = [str(exc), repr(exc), "".join(traceback.format_exception(exc))]
    if isinstance(exc, GatewayError):
        parts += [json.dumps(exc.body()), str(exc.headers)]
    return "\n".join(parts)


async def test_canary_key_never_leaks(
    loopback: tuple[LoopbackUpstream, str], caplog: pytest.LogCaptureFixture
) -> None:
    for name in (None, "httpx", "httpcore", "gateway"):
        caplog.set_level(logging.DEBUG, logger=name)
    upstream, base_url = loopback
    echo = json.dumps({"error": {"message": f"Incorrect API key provided: {CANARY_KEY}"}})
    upstream.replies += [
        http_response(503, b'{"error": {"message": "busy"}}'),
        http_response(200, json.dumps(completion_body()).encode()),
        http_response(
            200,
            sse([chunk("hi"), usage_chunk(), "[DONE]"]),
            content_type="text/event-stream",
        ),
        http_response(401, echo.encode()),
        http_response(400, echo.encode()),
    ]
    settings = CloudSettings(base_url=base_url, api_key=CANARY_KEY)
    clock = FakeClock()
    client = CloudClient(settings, clock=clock, sleep=FakeSleep(clock), rng=random.Random(0))
    texts: list[str] = [repr(settings), str(settings.model_dump()), repr(client)]
    try:
        result = await client.complete("chat", dict(CHAT), response_model="hybrid")
        assert result.attempts == 2
        stream = client.stream("chat", {**CHAT, "stream": True}, response_model="hybrid")
        assert [c async for c in stream][0]["model"] == "hybrid"

        errors: list[BaseException] = []
        for expected in (UpstreamError, InvalidRequestError):
            with pytest.raises(expected) as info:
                await client.complete("chat", dict(CHAT), response_model="hybrid")
            errors.append(info.value)
        breaker: dict[str, Any] = client.breaker_state()
    finally:
        await client.aclose()

    # The key did go out, in the header where it belongs.
    assert all(f"Bearer {CANARY_KEY}".encode() in request for request in upstream.requests)
    assert len(upstream.requests) == 5
    # One keep-alive connection throughout: a finished stream returns it to the pool.
    assert upstream.connections == 1
    texts += [error_texts(error) for error in errors]
    texts += [str(breaker), caplog.text]
    texts += [str(record.args) for record in caplog.records]
    assert "retrying" in caplog.text  # the logs were captured at all
    assert "HTTP Request" in caplog.text
    for text in texts:
        assert not leaks(text), text
    assert "***" in errors[1].message  # the echoed key was redacted from the 400
