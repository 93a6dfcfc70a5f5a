from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from gateway.cloud.sse_parse import iter_chunks, iter_data
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
