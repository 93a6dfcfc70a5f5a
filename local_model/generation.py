"""The async handle of one generation, fed from the engine's worker thread."""

from __future__ import annotations

import asyncio
import threading
import time
from collections import deque
from collections.abc import AsyncIterator

from local_model.types import GenerationDone, GenerationResult, TokenEvent, TokenLogprob

Event = TokenEvent | GenerationDone


class Generation:
    """Events of one generation, in order, ending with :class:`GenerationDone`.

    A producer (usually a worker thread) calls :meth:`publish` / :meth:`fail`;
    the consumer iterates :meth:`events` or awaits :meth:`result`. Closing the
    iteration (``aclosing``, task cancellation) or calling :meth:`cancel`
    tells the producer to stop at its next token.

    Waking the event loop costs CPU that the model's threads are using (about
    a quarter of a millisecond per wake-up on our VMs, on each side of the
    socket), so the producer only wakes it when someone iterates
    :meth:`events` / :meth:`batches` (streaming), at most once per
    ``wake_interval`` seconds; events produced in between travel together.
    :meth:`result` is woken once, at the end.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, *, wake_interval: float = 0.0) -> None:
        self._loop = loop
        self._wake_interval = wake_interval
        self._last_wake = float("-inf")
        self._backlog: deque[Event | BaseException] = deque()
        self._signal = asyncio.Event()
        self._eager = False
        self._wake_pending = False
        self._cancelled = threading.Event()
        # The outcome, kept for whoever accounts for the request even when the
        # consumer left early (a disconnected client still used compute).
        self._outcome: asyncio.Future[GenerationDone] = loop.create_future()
        self._ended = threading.Event()
        self._final: GenerationDone | BaseException | None = None

    # producer side (any thread)

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def publish(self, event: Event) -> None:
        self._backlog.append(event)
        if isinstance(event, GenerationDone):
            self._end(event)
        elif self._eager and not self._wake_pending:
            now = time.monotonic()
            if now - self._last_wake >= self._wake_interval:
                self._last_wake = now
                self._wake_pending = True
                self._loop.call_soon_threadsafe(self._wake)

    def fail(self, error: BaseException) -> None:
        self._backlog.append(error)
        self._end(error)

    def _end(self, final: GenerationDone | BaseException) -> None:
        self._final = final
        self._ended.set()
        self._loop.call_soon_threadsafe(self._resolve, final)

    # event loop side

    def _wake(self) -> None:
        self._wake_pending = False
        self._signal.set()

    def _resolve(self, final: GenerationDone | BaseException) -> None:
        self._signal.set()
        if self._outcome.done():
            return
        if isinstance(final, BaseException):
            self._outcome.set_exception(final)
            # Nobody may be waiting; do not let asyncio log "never retrieved".
            self._outcome.exception()
        else:
            self._outcome.set_result(final)

    def cancel(self) -> None:
        self._cancelled.set()

    async def _drain(self) -> AsyncIterator[list[Event]]:
        try:
            while True:
                batch: list[Event] = []
                while self._backlog:
                    item = self._backlog.popleft()
                    if isinstance(item, BaseException):
                        if batch:
                            yield batch
                        raise item
                    batch.append(item)
                    if isinstance(item, GenerationDone):
                        yield batch
                        return
                if batch:
                    yield batch
                    continue
                self._signal.clear()
                if not self._backlog:
                    await self._signal.wait()
        finally:
            self.cancel()

    async def batches(self) -> AsyncIterator[list[Event]]:
        """Events as they are delivered, in the groups they arrived in."""
        self._eager = True
        try:
            async for batch in self._drain():
                yield batch
        finally:
            # Nested async generators are not closed with their consumer.
            self.cancel()

    async def events(self) -> AsyncIterator[Event]:
        """Each event, as soon as it is delivered."""
        try:
            async for batch in self.batches():
                for event in batch:
                    yield event
        finally:
            self.cancel()

    async def finished(self) -> GenerationDone:
        """The last event, whether or not anyone consumed the stream."""
        return await asyncio.shield(self._outcome)

    @property
    def ended(self) -> bool:
        """The producer is done (finished or failed); never blocks, any thread."""
        return self._final is not None

    @property
    def final_done(self) -> GenerationDone | None:
        """The last event if the generation ended normally (from any thread, no waiting)."""
        final = self._final
        return final if isinstance(final, GenerationDone) else None

    def wait_finished(self, timeout: float | None = None) -> GenerationDone | None:
        """Block (from any thread but the loop's) until the generation ended."""
        if not self._ended.wait(timeout):
            return None
        if isinstance(self._final, BaseException):
            raise self._final
        return self._final

    async def result(self) -> GenerationResult:
        """Run to the end and gather the text, tokens and stats."""
        parts: list[str] = []
        tokens: list[TokenLogprob] = []
        async for batch in self._drain():
            for event in batch:
                parts.append(event.text)
                if isinstance(event, TokenEvent):
                    tokens.append(event.token)
                else:
                    return GenerationResult(
                        text="".join(parts),
                        tokens=tuple(tokens),
                        finish_reason=event.finish_reason,
                        stats=event.stats,
                    )
        raise RuntimeError("generation ended without a GenerationDone event")
