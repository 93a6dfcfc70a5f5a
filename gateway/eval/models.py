"""The two answerers of an evaluation: the local engine and the cloud client.

Both decode greedily (temperature 0) with the same completion length, so a
rerun reproduces the local answers and the two sides are compared on equal
terms. A chat item goes to the chat endpoint (the local model's chat
template), a bare prompt to the text completion endpoint (raw tokens), as
the gateway would send them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Protocol

from gateway.cloud.results import CloudResult
from gateway.errors import UpstreamError
from gateway.eval.answering import CloudAnswer, LocalAnswer
from gateway.eval.dataset import EvalItem
from local_model import ChatMessage
from local_model.engine import Engine
from local_model.types import GenerationRequest, SamplingParams


class LocalModel:
    """Answers items with a local engine, loaded on first use (a resumed run may need none)."""

    def __init__(
        self, load: Callable[[], Engine], *, max_tokens: int, sampling: SamplingParams
    ) -> None:
        self._load = load
        self._engine: Engine | None = None
        self._max_tokens = max_tokens
        self._sampling = sampling

    async def __call__(self, item: EvalItem) -> LocalAnswer:
        if self._engine is None:
            self._engine = self._load()
        engine = self._engine
        if item.prompt is not None:
            prompt = engine.tokenizer.tokenize(item.prompt)
        else:
            turns = [ChatMessage(m["role"], m["content"]) for m in item.chat_messages()]
            prompt = engine.tokenizer.tokenize_chat(turns)
        request = GenerationRequest(
            prompt_tokens=tuple(prompt),
            max_tokens=self._max_tokens,
            sampling=self._sampling,
            entropies=True,  # every signal is evaluated, the entropy ones included
        )
        started = time.perf_counter()
        result = await engine.submit(request).result()
        seconds = time.perf_counter() - started
        entropies = tuple(token.entropy for token in result.tokens)
        return LocalAnswer(
            text=result.text,
            logprobs=tuple(token.logprob for token in result.tokens),
            prompt_tokens=len(prompt),
            seconds=seconds,
            entropies=_all_known(entropies),
        )

    async def aclose(self) -> None:
        if self._engine is not None:
            await self._engine.aclose()


class Completer(Protocol):
    """What the eval needs of :class:`gateway.cloud.CloudClient`."""

    async def complete(
        self, endpoint: Any, payload: dict[str, Any], *, response_model: str
    ) -> CloudResult: ...


class CloudModel:
    """Answers items with the configured cloud, through the gateway's cloud client
    (its timeouts, retries and circuit breaker included)."""

    def __init__(self, client: Completer, *, max_tokens: int, top_p: float) -> None:
        self._client = client
        self._max_tokens = max_tokens
        self._top_p = top_p

    async def __call__(self, item: EvalItem) -> CloudAnswer:
        settings = {"max_tokens": self._max_tokens, "temperature": 0.0, "top_p": self._top_p}
        if item.prompt is not None:
            result = await self._client.complete(
                "text", {"prompt": item.prompt, **settings}, response_model="eval"
            )
        else:
            result = await self._client.complete(
                "chat", {"messages": item.chat_messages(), **settings}, response_model="eval"
            )
        usage = result.usage
        return CloudAnswer(
            text=_text_of(result.body),
            prompt_tokens=None if usage is None else usage.prompt_tokens,
            completion_tokens=None if usage is None else usage.completion_tokens,
            seconds=result.seconds,
        )


def _all_known(values: tuple[float | None, ...]) -> tuple[float, ...] | None:
    """The values when the engine reported every one, else None."""
    known = tuple(value for value in values if value is not None)
    return known if len(known) == len(values) else None


def _text_of(body: dict[str, Any]) -> str:
    """The first choice's text; a body without one is the upstream's fault."""
    try:
        choice = body["choices"][0]
        text = choice["message"]["content"] if "message" in choice else choice["text"]
    except (KeyError, IndexError, TypeError) as exc:
        raise UpstreamError("the cloud upstream's answer has no first choice") from exc
    # A chat answer may carry no content (a refusal, a tool call): that is an empty answer.
    return text if isinstance(text, str) else ""
