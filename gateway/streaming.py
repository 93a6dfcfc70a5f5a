"""A streaming response that always releases what feeds it."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from gateway import sse

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
            await super().__call__(scope, receive, send)
        finally:
            result = self._on_close()
            if inspect.isawaitable(result):
                await result
