"""Refuse request bodies over a size limit while they are read, never after.

A declared ``Content-Length`` over the limit is refused before the app runs; a
chunked body is counted as it arrives and refused at the first chunk that
crosses the limit. The body itself is never buffered here: ``receive`` is
wrapped, not drained.

Once the 413 is sent the app is told the client has gone (``http.disconnect``)
rather than given an exception: FastAPI turns any exception raised while it
reads a body into its own 400, which would race our answer. Whatever the app
sends afterwards is dropped.

FastAPI's own ``max_body_size`` (``AppBodyLimitMiddleware``) stays off: it sits
outside every user middleware, so its plain-text 413 would carry neither the
OpenAI error shape, nor ``x-request-id``, nor a ledger record.
"""

from __future__ import annotations

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import RequestTooLargeError, error_response


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        declared = _content_length(scope)
        if declared is not None and declared > limit:
            await _refuse(scope, receive, send, limit)
            return

        received = 0
        refused = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    if not started:
                        await _refuse(scope, receive, send, limit)
                    return {"type": "http.disconnect"}
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        await self.app(scope, limited_receive, guarded_send)


async def _refuse(scope: Scope, receive: Receive, send: Send, limit: int) -> None:
    error = RequestTooLargeError(f"the request body is larger than the limit of {limit} bytes")
    # The client may still be sending: close the connection rather than read the rest.
    response = error_response(error)
    response.headers["connection"] = "close"
    await response(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    value = Headers(scope=scope).get("content-length")
    if value is None:
        return None
    try:
        return int(value)
    except ValueError:
        return None
