"""Server-sent events framing, as OpenAI streams it."""

from __future__ import annotations

from typing import Any

from gateway import jsonio

DONE = b"data: [DONE]\n\n"
HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
MEDIA_TYPE = "text/event-stream"


def event(payload: dict[str, Any]) -> bytes:
    return b"data: " + jsonio.dumps(payload) + b"\n\n"
