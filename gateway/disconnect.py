"""Stopping work when the client goes away before a non-streamed answer is ready."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

from starlette.types import Receive

T = TypeVar("T")


class ClientDisconnected(Exception):
    """The client closed the connection before the response was sent."""


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def cancel_on_disconnect(receive: Receive, work: Awaitable[T]) -> T:
    """Await ``work`` in this task; if the client leaves first (``receive`` says
    ``http.disconnect``), cancel it and raise ClientDisconnected.

    A watcher task cancels this one when the disconnect arrives, the way
    ``asyncio.timeout`` does on its deadline, and the cancellation it caused is
    taken back (``uncancel``) and turned into ClientDisconnected; any other
    cancellation of this task goes through. Running the work here rather than
    in a task of its own saved one task and an ``asyncio.wait`` per request
    (about 3% of the gateway's CPU on the cloud route).
    """
    task = asyncio.current_task()
    if task is None:  # pragma: no cover - always called from a request's task
        raise RuntimeError("cancel_on_disconnect needs a running task")
    cancelling = task.cancelling()
    left = False

    async def watch() -> None:
        nonlocal left
        try:
            await _wait_for_disconnect(receive)
        except Exception:  # a broken receive channel: the client is as good as gone
            pass
        left = True
        task.cancel()

    watcher = asyncio.ensure_future(watch())
    try:
        result = await work
    except asyncio.CancelledError:
        if left and task.uncancel() <= cancelling:
            raise ClientDisconnected() from None
        raise
    finally:
        watcher.cancel()
    if left:  # the work swallowed the cancellation and finished: take it back all the same
        task.uncancel()
    return result
