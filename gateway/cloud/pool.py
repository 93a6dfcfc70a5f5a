"""A free list of single-connection httpx clients, bounded by a semaphore.

One shared ``httpx.AsyncClient`` with a large pool costs CPU on every request
and response: httpcore rescans every pooled connection (a ``poll()`` per idle
one). Here each client holds at most one connection and is taken by one
request at a time, so that scan is over a single connection.

``max_connections`` bounds the clients in use at once; a request that finds
them all busy waits up to ``wait_s`` and then gets ``httpx.PoolTimeout``,
exactly what a full httpx pool raised, so the error mapping is unchanged.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import httpx


class SharedTransport(httpx.AsyncBaseTransport):
    """An injected transport shared by every client; only its owner closes it."""

    def __init__(self, transport: httpx.AsyncBaseTransport) -> None:
        self.transport = transport

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        return await self.transport.handle_async_request(request)

    async def aclose(self) -> None:
        pass


class ClientPool:
    def __init__(
        self,
        factory: Callable[[], httpx.AsyncClient],
        *,
        max_connections: int,
        max_idle: int,
        wait_s: float,
    ) -> None:
        self._factory = factory
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._wait_s = wait_s
        #: idle clients, most recently used last (LIFO keeps few connections warm)
        self._idle: list[httpx.AsyncClient] = []
        #: every client not yet closed: idle, busy, or whose close was interrupted
        self._open: set[httpx.AsyncClient] = set()
        self._busy: set[httpx.AsyncClient] = set()
        self._closed = False
        #: clients created so far
        self.created = 0

    @asynccontextmanager
    async def client(self) -> AsyncIterator[httpx.AsyncClient]:
        """A client for one request (or one stream, until it is closed)."""
        if self._closed:
            raise RuntimeError("Cannot send a request, as the client has been closed.")
        await self._acquire()
        try:
            if self._idle:
                http = self._idle.pop()
            else:
                http = self._factory()
                self.created += 1
                self._open.add(http)
        except BaseException:
            self._slots.release()
            raise
        self._busy.add(http)
        reusable = False
        try:
            yield http
            reusable = True
        except httpx.RequestError:
            # Its connection may be broken: don't hand it to the next request.
            raise
        except BaseException:
            # Cancelled, or the caller stopped mid-stream: httpcore has already
            # closed a connection left mid-response, so the client is reusable.
            reusable = True
            raise
        finally:
            # Free the slot first: nothing below may leave it held.
            self._slots.release()
            self._busy.discard(http)
            if reusable and not self._closed and len(self._idle) < self._max_idle:
                self._idle.append(http)
            else:
                await self._close(http)

    async def aclose(self) -> None:
        """Close the idle clients now; busy ones are closed when they come back."""
        self._closed = True
        self._idle = []
        for http in list(self._open - self._busy):
            await self._close(http)

    async def _acquire(self) -> None:
        if not self._slots.locked():
            await self._slots.acquire()  # returns at once
            return
        try:
            async with asyncio.timeout(self._wait_s):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("all connections to the cloud upstream are busy") from None

    async def _close(self, http: httpx.AsyncClient) -> None:
        await http.aclose()
        # Only once closed: a close interrupted by a cancellation leaves it for aclose().
        self._open.discard(http)
