from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from starlette.requests import ClientDisconnect

from gateway.streaming import SSEResponse
from local_model.generation import Generation


async def test_generation_is_cancelled_when_the_client_is_gone_before_the_first_byte() -> None:
    generation = Generation(asyncio.get_running_loop())
    started = False

    async def body() -> AsyncIterator[bytes]:
        nonlocal started
        started = True
        yield b"data: never\n\n"

    async def receive() -> dict[str, object]:
        await asyncio.sleep(3600)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, object]) -> None:
        raise OSError("connection reset by peer")

    response = SSEResponse(body(), on_close=generation.cancel)
    scope = {"type": "http", "asgi": {"spec_version": "2.4"}, "method": "POST", "headers": []}
    with pytest.raises((OSError, ClientDisconnect)):
        await response(scope, receive, send)
    assert not started
    assert generation.cancelled
