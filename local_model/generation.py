"""The async handle of one generation, fed from the engine's worker thread."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator

from local_model.types import GenerationDone, GenerationResult, TokenEvent, TokenLogprob

Event = TokenEvent | GenerationDone


class Generation:
    """Events of one generation, in order, ending with :class:`GenerationDone`.

    A producer (usually a worker thread) calls :meth:`publish` / :meth:`fail`;
    the consumer iterates :meth:`events`. Leaving the iteration early, or
    calling :meth:`cancel`, tells the producer to stop at its next token.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._queue: asyncio.Queue[Event | BaseException] = asyncio.Queue()
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
        self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        if isinstance(event, GenerationDone):
            self._end(event)

    def fail(self, error: BaseException) -> None:
        self._loop.call_soon_threadsafe(self._queue.put_nowait, error)
        self._end(error)

    def _end(self, final: GenerationDone | BaseException) -> None:
        self._final = final
        self._ended.set()
        self._loop.call_soon_threadsafe(self._resolve, final)

    def _resolve(self, final: GenerationDone | BaseException) -> None:
        if self._outcome.done():
            return
        if isinstance(final, BaseException):
            self._outcome.set_exception(final)
            # Nobody may be waiting; do not let asyncio log "never retrieved".
            self._outcome.exception()
        else:
            self._outcome.set_result(final)

    # consumer side (event loop)

    def cancel(self) -> None:
        self._cancelled.set()

    async def events(self) -> AsyncIterator[Event]:
        try:
            while True:
                item = await self._queue.get()
                if isinstance(item, BaseException):
                    raise item
                yield item
                if isinstance(item, GenerationDone):
                    return
        finally:
            self.cancel()

    async def finished(self) -> GenerationDone:
        """The last event, whether or not anyone consumed the stream."""
        return await asyncio.shield(self._outcome)

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
        async for event in self.events():
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
