"""Fakes for fast tests: an engine that replays scripted replies."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

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
    #: each token's entropy; a token past the end reports none (as an engine that omits them)
    entropies: tuple[float, ...] = ()


class FakeTokenizer:
    """One token per whitespace-separated word; chat adds two per message."""

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return "".join(f"<s> <{message.role}> {message.content}\n" for message in messages)

    def tokenize_rendered(self, prompt: str) -> list[int]:
        tokens: list[int] = []
        for word in prompt.split():
            if word == "<s>":
                tokens.append(1)
            elif word.startswith("<") and word.endswith(">"):
                tokens.append(2)
            else:
                tokens += self.tokenize(word)
        return tokens

    def tokenize_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self.tokenize_rendered(self.render_chat(messages))

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
        #: what status() reports as recent seconds per request (drives the load rule)
        self.seconds_per_request = 0.0

    def enqueue(
        self,
        pieces: Sequence[str],
        logprobs: Sequence[float] = (),
        delay: float = 0.0,
        fail_after: int | None = None,
        entropies: Sequence[float] = (),
    ) -> None:
        self._replies.append(
            Reply(tuple(pieces), tuple(logprobs), delay, fail_after, tuple(entropies))
        )

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
            seconds_per_request=self.seconds_per_request,
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
                known = request.entropies and i < len(reply.entropies)
                entropy = reply.entropies[i] if known else None
                count += 1
                token = TokenLogprob(100 + i, piece, piece.encode(), logprob, entropy=entropy)
                generation.publish(TokenEvent(released, token))
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


@dataclass
class CloudReply:
    pieces: tuple[str, ...] = ("Cloud", " answer")
    usage: bool = True
    #: raise this instead of answering (before the first chunk)
    error: Exception | None = None


class FakeCloudStream:
    def __init__(self, kind: str, reply: CloudReply, response_model: str) -> None:
        self.kind = kind
        self.reply = reply
        self.model = response_model
        self.usage: Any = None
        self.attempts = 1
        self.closed = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[dict[str, Any]]:
        from gateway.cloud import CloudUsage

        if self.reply.error is not None:
            raise self.reply.error
        for piece in self.reply.pieces:
            await asyncio.sleep(0)
            if self.kind == "chat":
                choice = {"index": 0, "delta": {"content": piece}, "finish_reason": None}
                yield {
                    "id": "up-1",
                    "object": "chat.completion.chunk",
                    "created": 1,
                    "model": self.model,
                    "choices": [choice],
                }
            else:
                yield {
                    "id": "up-1",
                    "object": "text_completion",
                    "created": 1,
                    "model": self.model,
                    "choices": [{"index": 0, "text": piece, "finish_reason": None}],
                }
        if self.reply.usage:
            self.usage = CloudUsage(prompt_tokens=11, completion_tokens=len(self.reply.pieces))

    async def aclose(self) -> None:
        self.closed = True


class FakeCloud:
    """Stands in for gateway.cloud.CloudClient; records every call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.streams: list[FakeCloudStream] = []
        self._replies: deque[CloudReply] = deque()
        self.state = "closed"
        self.closed = False

    def enqueue(self, reply: CloudReply) -> None:
        self._replies.append(reply)

    def _next(self) -> CloudReply:
        return self._replies.popleft() if self._replies else CloudReply()

    async def complete(self, endpoint: str, payload: dict[str, Any], *, response_model: str):
        from gateway.cloud import CloudResult, CloudUsage

        self.calls.append((endpoint, payload))
        reply = self._next()
        if reply.error is not None:
            raise reply.error
        text = "".join(reply.pieces)
        if endpoint == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        else:
            choice = {"index": 0, "text": text, "finish_reason": "stop"}
        usage = CloudUsage(prompt_tokens=11, completion_tokens=len(reply.pieces))
        body = {
            "id": "up-1",
            "object": "chat.completion" if endpoint == "chat" else "text_completion",
            "created": 1,
            "model": response_model,
            "choices": [choice],
            "usage": {
                "prompt_tokens": 11,
                "completion_tokens": len(reply.pieces),
                "total_tokens": 11 + len(reply.pieces),
            },
        }
        return CloudResult(body=body, usage=usage, attempts=1, seconds=0.001)

    def stream(self, endpoint: str, payload: dict[str, Any], *, response_model: str):
        self.calls.append((endpoint, payload))
        stream = FakeCloudStream(endpoint, self._next(), response_model)
        self.streams.append(stream)
        return stream

    def breaker_state(self) -> dict[str, Any]:
        return {"state": self.state}

    async def aclose(self) -> None:
        self.closed = True
