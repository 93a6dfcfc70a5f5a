"""The Generation handle between a producer thread and the event loop."""

from __future__ import annotations

import asyncio
import threading
from contextlib import aclosing

import pytest

from local_model import GenerationDone, GenerationFailedError, GenerationStats, TokenEvent
from local_model.generation import Generation
from local_model.types import TokenLogprob

STATS = GenerationStats(1, 5, 0.0, 0.0, 0.0)


def _token(i: int) -> TokenEvent:
    return TokenEvent(str(i), TokenLogprob(i, str(i), str(i).encode(), -0.1))


def _produce(generation: Generation, count: int, *, fail: bool = False) -> threading.Thread:
    def run() -> None:
        for i in range(count):
            generation.publish(_token(i))
        if fail:
            generation.fail(GenerationFailedError("boom"))
        else:
            generation.publish(GenerationDone("length", "!", STATS))

    thread = threading.Thread(target=run)
    thread.start()
    return thread


async def test_events_arrive_in_order_and_end_with_done() -> None:
    generation = Generation(asyncio.get_running_loop())
    thread = _produce(generation, 50)
    events = [e async for e in generation.events()]
    thread.join()
    assert [e.text for e in events] == [str(i) for i in range(50)] + ["!"]
    assert isinstance(events[-1], GenerationDone)


async def test_a_long_wake_interval_groups_tokens() -> None:
    generation = Generation(asyncio.get_running_loop(), wake_interval=60.0)
    batches = []

    async def consume() -> None:
        async for batch in generation.batches():
            batches.append(batch)

    consumer = asyncio.ensure_future(consume())
    await asyncio.sleep(0)  # the consumer is waiting before production starts
    thread = _produce(generation, 20)
    await consumer
    thread.join()
    # the first token wakes the loop at once; the rest wait for the end
    assert len(batches) <= 2
    assert [e.text for b in batches for e in b] == [str(i) for i in range(20)] + ["!"]


async def test_result_gathers_everything() -> None:
    generation = Generation(asyncio.get_running_loop())
    thread = _produce(generation, 5)
    result = await generation.result()
    thread.join()
    assert result.text == "01234!"
    assert [t.token_id for t in result.tokens] == [0, 1, 2, 3, 4]
    assert result.finish_reason == "length"
    assert (await generation.finished()).stats == STATS


async def test_failure_reaches_consumer_after_earlier_events() -> None:
    generation = Generation(asyncio.get_running_loop())
    thread = _produce(generation, 3, fail=True)
    seen = []
    with pytest.raises(GenerationFailedError):
        async for event in generation.events():
            seen.append(event.text)
    thread.join()
    assert seen == ["0", "1", "2"]
    with pytest.raises(GenerationFailedError):
        await generation.finished()


async def test_closing_the_iteration_cancels() -> None:
    generation = Generation(asyncio.get_running_loop())
    generation.publish(_token(0))
    async with aclosing(generation.events()) as events:
        async for _ in events:
            break
    assert generation.cancelled
