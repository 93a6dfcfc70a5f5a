"""Reading an OpenAI-style server-sent event stream: ``data: {json}`` events up to ``[DONE]``.

Only the ``data`` field matters to OpenAI-compatible streams; ``event``, ``id``
and ``retry`` fields and ``:`` comment lines (keep-alives) are skipped.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from gateway import jsonio
from gateway.errors import UpstreamError

DONE = "[DONE]"
_LINE_ENDS = (b"\n", b"\r")


async def iter_lines(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """The lines of an event stream's bytes, without their ends, decoded as UTF-8.

    A line ends with CRLF, LF or CR, as the SSE spec allows; a CR at the end of a
    chunk waits for the next one (it may be half of a CRLF). httpx's
    ``aiter_lines`` does the same through its text decoders and content-type
    charset lookup, which cost a fifth of a streamed cloud request's parsing.
    """
    pending = b""
    async for chunk in chunks:
        if not chunk:
            continue
        lines = (pending + chunk).splitlines(keepends=True)
        pending = (
            lines.pop() if lines[-1].endswith(b"\r") or not lines[-1].endswith(_LINE_ENDS) else b""
        )
        for line in lines:
            yield line.rstrip(b"\r\n").decode("utf-8", "replace")
    if pending:
        yield pending.rstrip(b"\r\n").decode("utf-8", "replace")


async def iter_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """The data of each event; multi-line data is joined with newlines, as the spec says."""
    data: list[str] = []
    async for line in lines:
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value.removeprefix(" "))
    if data:
        # An unterminated last event: lenient, since "[DONE]" often arrives without "\n\n".
        yield "\n".join(data)


async def iter_chunks(lines: AsyncIterable[str]) -> AsyncIterator[dict[str, Any]]:
    """Each event parsed as a JSON object, up to ``[DONE]``.

    Raises UpstreamError for anything else: an event that is not a JSON object,
    an in-band ``{"error": ...}`` event, or the stream ending without ``[DONE]``
    (a cut connection must not pass for a complete answer).
    """
    events = iter_data(lines)
    async for data in events:
        if data == DONE:
            # Read to the end so the connection goes back to the pool instead of
            # being dropped with unread bytes (a new TLS handshake next time).
            async for _ in events:
                pass
            return
        try:
            chunk = jsonio.loads(data)
        except ValueError as exc:
            raise UpstreamError("the cloud upstream sent a malformed stream event") from exc
        if not isinstance(chunk, dict):
            raise UpstreamError("the cloud upstream sent a stream event that is not an object")
        if "error" in chunk:
            raise UpstreamError("the cloud upstream reported an error in the middle of the stream")
        yield chunk
    raise UpstreamError("the cloud upstream stream ended before [DONE]")
