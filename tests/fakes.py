"""Fakes for fast tests: an engine that replays scripted replies."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass

from local_model import (
    ChatMessage,
    GenerationFailedError,
    GenerationRequest,
    GenerationStats,
    QueueFullError,
    TokenEvent,
    TokenLogprob,
)
from local_model.engine import Engine, Tokenizer
from local_model.generation import Generation
from local_model.text import StopMatcher
from local_model.types import EngineStatus, GenerationDone, ModelInfo


@dataclass(frozen=True)
class Reply:
    """Scripted output: one entry per token, with its log-probability."""

    pieces: tuple[str, ...]
    logprobs: tuple[float, ...] = ()
    #: seconds to wait before each token (lets tests hold a generation open)
    delay: float = 0.0
    #: raise inside the "engine" after this many tokens (None = never)
    fail_after: int | None = None


class FakeTokenizer:
    """One token per whitespace-separated word; chat adds two per message."""

    def tokenize_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        tokens: list[int] = []
        for message in messages:
            tokens += [1, 2] + self.tokenize(message.content)
        return tokens

    def tokenize(self, text: str) -> list[int]:
        return [3 + (hash(word) % 1000) for word in text.split()]


class FakeEngine:
    def __init__(self, *, n_ctx: int = 256, max_waiting: int = 4) -> None:
        self._replies: deque[Reply] = deque()
        self.history: list[GenerationRequest] = []
        self.cancelled: list[GenerationRequest] = []
        self._info = ModelInfo(name="fake", path="fake.gguf", n_ctx=n_ctx, n_vocab=1003)
        self._tokenizer = FakeTokenizer()
        self._max_waiting = max_waiting
        self._active = 0
        self.closed = False

    def enqueue(
        self,
        pieces: Sequence[str],
        logprobs: Sequence[float] = (),
        delay: float = 0.0,
        fail_after: int | None = None,
    ) -> None:
        self._replies.append(Reply(tuple(pieces), tuple(logprobs), delay, fail_after))

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def tokenizer(self) -> FakeTokenizer:
        return self._tokenizer

    def status(self) -> EngineStatus:
        running = min(self._active, 1)
        return EngineStatus(
            loaded=not self.closed,
            running=running,
            waiting=self._active - running,
            max_waiting=self._max_waiting,
            tokens_per_second=0.0,
        )

    def submit(self, request: GenerationRequest) -> Generation:
        if self._active > self._max_waiting:
            raise QueueFullError("fake queue full", retry_after_seconds=2.5)
        reply = self._replies.popleft() if self._replies else Reply(("Hello", " world"))
        self.history.append(request)
        generation = Generation(asyncio.get_running_loop())
        self._active += 1
        asyncio.get_running_loop().create_task(self._play(request, reply, generation))
        return generation

    async def _play(self, request: GenerationRequest, reply: Reply, generation: Generation):
        stops = StopMatcher(request.stop)
        count = 0
        finish = "length"
        matched = False
        try:
            for i, piece in enumerate(reply.pieces):
                if reply.delay:
                    await asyncio.sleep(reply.delay)
                if generation.cancelled:
                    self.cancelled.append(request)
                    finish = "cancelled"
                    break
                if count >= request.max_tokens:
                    break
                if reply.fail_after is not None and count >= reply.fail_after:
                    generation.fail(GenerationFailedError("fake engine failure"))
                    return
                released, stopped = stops.feed(piece)
                logprob = reply.logprobs[i] if i < len(reply.logprobs) else -0.5
                count += 1
                generation.publish(
                    TokenEvent(released, TokenLogprob(100 + i, piece, piece.encode(), logprob))
                )
                if stopped:
                    finish = "stop"
                    matched = True
                    break
            else:
                finish = "stop"
            tail = "" if matched else stops.flush()
            stats = GenerationStats(len(request.prompt_tokens), count, 0.0, 0.01, 0.02)
            generation.publish(GenerationDone(finish, tail, stats))  # type: ignore[arg-type]
        finally:
            self._active -= 1

    async def aclose(self) -> None:
        self.closed = True


class RecordingEngine:
    """Wraps a real engine and keeps every Generation it hands out."""

    def __init__(self, inner: Engine) -> None:
        self.inner = inner
        self.generations: list[Generation] = []

    @property
    def info(self) -> ModelInfo:
        return self.inner.info

    @property
    def tokenizer(self) -> Tokenizer:
        return self.inner.tokenizer

    def status(self) -> EngineStatus:
        return self.inner.status()

    def submit(self, request: GenerationRequest) -> Generation:
        generation = self.inner.submit(request)
        self.generations.append(generation)
        return generation

    async def aclose(self) -> None:
        await self.inner.aclose()
