"""A small OpenAI-compatible upstream on loopback that records what reaches it.

It answers at once by default. A word in the last message picks a misbehaviour:

``drip``       stream a chunk every ``DRIP_INTERVAL_S`` until the client goes away
``hang``       accept the request and answer nothing until the client goes away
``echo401``    401 whose message repeats the Authorization header it received
``echo500``    500 whose plain-text body repeats it
``echo400``    400 whose error message repeats it (the gateway passes 400 messages on)
``garbage``    200 whose body is not JSON and repeats it
``cutstream``  one chunk, then a malformed line that repeats it, then the connection ends

Every request is recorded with its Authorization header, its body, whether the
client disconnected before the answer was complete, and when.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

DRIP_INTERVAL_S = 0.05
DRIP_MAX_CHUNKS = 1200
HANG_MAX_S = 60.0

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


@dataclass
class Call:
    path: str
    authorization: str
    body: dict[str, Any]
    received_at: float = field(default_factory=time.monotonic)
    #: monotonic time the gateway closed the connection before the answer was complete
    disconnected_at: float | None = None

    @property
    def text(self) -> str:
        """Every message's content (or the prompt), for markers the scenarios look for."""
        messages = self.body.get("messages") or []
        parts = [str(m.get("content", "")) for m in messages if isinstance(m, dict)]
        prompt = self.body.get("prompt")
        if prompt is not None:
            parts.append(str(prompt))
        return "\n".join(parts)


def _chunk(text: str, finish: str | None = None) -> bytes:
    event = {
        "id": "up-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "stand-in",
        "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(event).encode() + b"\n\n"


_USAGE = {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}
_ANSWER = {
    "id": "up-1",
    "object": "chat.completion",
    "created": 1,
    "model": "stand-in",
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "Cloud says hi."},
            "finish_reason": "stop",
        }
    ],
    "usage": _USAGE,
}
_STREAM = (
    _chunk("Cloud")
    + _chunk(" says")
    + _chunk(" hi.", "stop")
    + b"data: "
    + json.dumps(
        {"id": "up-1", "object": "chat.completion.chunk", "choices": [], "usage": _USAGE}
    ).encode()
    + b"\n\ndata: [DONE]\n\n"
)


class RecordingUpstream:
    """Raw ASGI (no framework); the lists are read from the test's thread."""

    def __init__(self) -> None:
        self.calls: list[Call] = []
        self._lock = threading.Lock()

    def snapshot(self) -> list[Call]:
        with self._lock:
            return list(self.calls)

    def calls_with(self, marker: str) -> list[Call]:
        return [call for call in self.snapshot() if marker in call.text]

    async def __call__(self, scope: dict[str, Any], receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        raw = b""
        while True:
            message = await receive()
            raw += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        try:
            body = json.loads(raw) if raw else {}
        except ValueError:
            body = {}
        call = Call(scope["path"], headers.get("authorization", ""), body)
        with self._lock:
            self.calls.append(call)
        text = call.text
        key = call.authorization
        if "drip" in text:
            await self._drip(call, receive, send)
        elif "hang" in text:
            await self._hang(call, receive)
        elif "echo401" in text:
            await _json(send, 401, {"error": {"message": f"invalid key {key}", "code": "bad"}})
        elif "echo500" in text:
            await _raw(send, 500, f"internal error while serving {key}".encode(), "text/plain")
        elif "echo400" in text:
            error = {"message": f"bad request from {key}", "param": "messages", "code": "nope"}
            await _json(send, 400, {"error": error})
        elif "garbage" in text:
            await _raw(send, 200, f"<html>not json {key}</html>".encode(), "text/html")
        elif "cutstream" in text:
            await _start(send, 200, "text/event-stream")
            await _body(send, _chunk("partial"), more=True)
            await _body(send, f"data: {{broken {key}\n\n".encode(), more=False)
        elif body.get("stream"):
            await _raw(send, 200, _STREAM, "text/event-stream")
        else:
            await _json(send, 200, _ANSWER)

    async def _drip(self, call: Call, receive: Receive, send: Send) -> None:
        gone = asyncio.ensure_future(_disconnect(receive))
        try:
            await _start(send, 200, "text/event-stream")
            for i in range(DRIP_MAX_CHUNKS):
                if gone.done():
                    break
                await _body(send, _chunk(f" {i}"), more=True)
                await asyncio.wait({gone}, timeout=DRIP_INTERVAL_S)
            else:
                await _body(send, b"data: [DONE]\n\n", more=False)
                return
            call.disconnected_at = time.monotonic()
        finally:
            gone.cancel()

    async def _hang(self, call: Call, receive: Receive) -> None:
        try:
            await asyncio.wait_for(_disconnect(receive), HANG_MAX_S)
        except TimeoutError:
            return
        call.disconnected_at = time.monotonic()


async def _disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _start(send: Send, status: int, content_type: str) -> None:
    headers = [(b"content-type", content_type.encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})


async def _body(send: Send, data: bytes, *, more: bool) -> None:
    await send({"type": "http.response.body", "body": data, "more_body": more})


async def _raw(send: Send, status: int, data: bytes, content_type: str) -> None:
    await _start(send, status, content_type)
    await _body(send, data, more=False)


async def _json(send: Send, status: int, value: dict[str, Any]) -> None:
    await _raw(send, status, json.dumps(value).encode(), "application/json")
