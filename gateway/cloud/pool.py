"""The bound on cloud requests in flight, whatever the transport.

``max_connections`` requests may be in flight at once (a stream counts until
it is closed); one more waits up to ``wait_s`` for a slot and then gets
``httpx.PoolTimeout``, which gateway.cloud.failures turns into a 503: our
own saturation, not an upstream fault. The transport's connection pool is
as large, so it never queues a request itself.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx


class RequestSlots:
    def __init__(self, max_in_flight: int, *, wait_s: float) -> None:
        self._slots = asyncio.Semaphore(max_in_flight)
        self._wait_s = wait_s
        self.in_flight = 0

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        if self._slots.locked():
            try:
                async with asyncio.timeout(self._wait_s):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("all connections to the cloud upstream are busy") from None
        else:
            await self._slots.acquire()  # returns at once
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1
            self._slots.release()
