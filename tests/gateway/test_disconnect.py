"""cancel_on_disconnect: the work runs in the caller's task; a disconnect cancels it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from gateway.disconnect import ClientDisconnected, cancel_on_disconnect


class FakeRequest:
    """``receive`` waits until ``leave()`` (or ``break_channel()``) is called."""

    def __init__(self) -> None:
        self._left = asyncio.Event()
        self._broken = False

    def leave(self) -> None:
        self._left.set()

    def break_channel(self) -> None:
        self._broken = True
        self._left.set()

    async def receive(self) -> dict[str, Any]:
        await self._left.wait()
        if self._broken:
            raise RuntimeError("receive channel broken")
        return {"type": "http.disconnect"}


async def test_result_of_finished_work_and_no_cancellation_left_behind() -> None:
    fake = FakeRequest()

    async def work() -> str:
        await asyncio.sleep(0)
        return "answer"

    assert await cancel_on_disconnect(fake.receive, work()) == "answer"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # a later disconnect reaches nobody
    fake.leave()
    await asyncio.sleep(0.01)


async def test_disconnect_cancels_the_work_and_raises() -> None:
    fake = FakeRequest()
    cleaned_up = asyncio.Event()
    started = asyncio.Event()

    async def work() -> str:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            cleaned_up.set()
        return "never"

    async def leave_soon() -> None:
        await started.wait()
        fake.leave()

    leaving = asyncio.ensure_future(leave_soon())
    with pytest.raises(ClientDisconnected):
        await cancel_on_disconnect(fake.receive, work())
    await leaving
    assert cleaned_up.is_set()  # the work's own cleanup ran before the raise
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)  # and the cancellation it caused does not come back later


async def test_broken_receive_channel_counts_as_a_disconnect() -> None:
    fake = FakeRequest()

    async def work() -> None:
        fake.break_channel()
        await asyncio.sleep(60)

    with pytest.raises(ClientDisconnected):
        await cancel_on_disconnect(fake.receive, work())


async def test_work_errors_pass_through() -> None:
    async def work() -> None:
        await asyncio.sleep(0)
        raise ValueError("bad upstream")

    with pytest.raises(ValueError, match="bad upstream"):
        await cancel_on_disconnect(FakeRequest().receive, work())


async def waiting_request(fake: FakeRequest) -> asyncio.Task[None]:
    """A request task whose work has started and waits (until cancelled)."""
    started = asyncio.Event()

    async def work() -> None:
        started.set()
        await asyncio.sleep(60)

    async def request_task() -> None:
        await cancel_on_disconnect(fake.receive, work())

    task = asyncio.ensure_future(request_task())
    await started.wait()
    return task


async def test_outside_cancellation_is_not_a_disconnect() -> None:
    task = await waiting_request(FakeRequest())
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_outside_cancellation_wins_over_a_simultaneous_disconnect() -> None:
    fake = FakeRequest()
    task = await waiting_request(fake)
    fake.leave()
    await asyncio.sleep(0)  # the watcher has seen the disconnect and cancelled the task
    task.cancel()  # and so has the server, shutting down: that must not be swallowed
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_work_that_swallows_the_cancellation_returns_and_leaves_none_behind() -> None:
    fake = FakeRequest()

    async def work() -> str:
        fake.leave()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            pass
        return "finished anyway"

    assert await cancel_on_disconnect(fake.receive, work()) == "finished anyway"
    task = asyncio.current_task()
    assert task is not None and task.cancelling() == 0
    await asyncio.sleep(0)
