"""A streaming response that always releases what feeds it."""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway import sse
from gateway.disconnect import ClientDisconnected, cancel_on_disconnect

Closer = Callable[[], Awaitable[None] | None]


class SSEResponse(StreamingResponse):
    """SSE response that runs ``on_close`` however the response ends.

    The body generator's own ``finally`` only runs if iteration started; a
    client that leaves before the first byte must stop the model (or close the
    upstream connection) too.
    """

    def __init__(
        self, content: Any, *, on_close: Closer, headers: dict[str, str] | None = None
    ) -> None:
        super().__init__(
            content, media_type=sse.MEDIA_TYPE, headers={**sse.HEADERS, **(headers or {})}
        )
        self._on_close = on_close

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            if scope["type"] == "http" and self.background is None:
                # Starlette (before ASGI 2.4, which uvicorn does not claim) runs the stream and
                # a disconnect listener in an anyio task group: 15% of a streamed cloud
                # request's instructions. The same, in this task and one watcher:
                with contextlib.suppress(ClientDisconnected):
                    await cancel_on_disconnect(receive, self.stream_response(send))
            else:
                await super().__call__(scope, receive, send)
        finally:
            result = self._on_close()
            if inspect.isawaitable(result):
                await result
