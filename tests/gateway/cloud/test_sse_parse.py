from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import httpx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.cloud.sse_parse import iter_chunks, iter_data, iter_lines
from gateway.errors import UpstreamError


async def lines(items: Iterable[str]) -> AsyncIterator[str]:
    for item in items:
        yield item


async def collect(items: Iterable[str]) -> list[dict[str, Any]]:
    return [chunk async for chunk in iter_chunks(lines(items))]


async def test_multiline_data_is_joined() -> None:
    got = [d async for d in iter_data(lines(["data: a", "data:b", "", ": c", "", "data: x"]))]
    assert got == ["a\nb", "x"]


async def test_stops_at_done_and_reads_the_rest() -> None:
    rest = ["data: {}", ""]
    read: list[str] = []

    async def source() -> AsyncIterator[str]:
        for item in ['data: {"a": 1}', "", "data: [DONE]", "", *rest]:
            read.append(item)
            yield item

    assert [c async for c in iter_chunks(source())] == [{"a": 1}]
    assert len(read) == 6  # drained, so the connection can be reused


async def test_end_without_done_is_an_error() -> None:
    with pytest.raises(UpstreamError, match="before"):
        await collect(['data: {"a": 1}', ""])


async def test_empty_stream_is_an_error() -> None:
    with pytest.raises(UpstreamError):
        await collect([])


async def byte_chunks(parts: Iterable[bytes]) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def split_lines(data: bytes, cuts: list[int]) -> list[str]:
    bounds = sorted({min(c, len(data)) for c in cuts})
    parts = [data[a:b] for a, b in zip([0, *bounds], [*bounds, len(data)], strict=True)]

    async def run() -> list[str]:
        return [line async for line in iter_lines(byte_chunks(parts))]

    return asyncio.run(run())


@given(
    st.lists(st.sampled_from([b"data: ", b"{}", b"\r", b"\n", b"\r\n", "\u00e9".encode(), b"x"])),
    st.lists(st.integers(min_value=0, max_value=60)),
)
def test_lines_whatever_the_chunking(pieces: list[bytes], cuts: list[int]) -> None:
    # CRLF, LF and CR all end a line, even when a chunk boundary falls inside a CRLF or
    # inside a multi-byte character.
    data = b"".join(pieces)
    expected = [line.decode("utf-8") for line in data.splitlines()]
    assert split_lines(data, cuts) == expected


async def test_lines_match_httpx_on_an_event_stream() -> None:
    body = b'data: {"a": 1}\r\n\r\n: keep-alive\n\ndata: [DONE]\r\rtail'
    response = httpx.Response(200, content=body, headers={"content-type": "text/event-stream"})
    ours = [line async for line in iter_lines(byte_chunks([body[:17], body[17:18], body[18:]]))]
    assert ours == [line async for line in response.aiter_lines()]
