"""Building OpenAI response bodies and stream chunks from local generation values.

Bodies are plain dicts: they are serialised once per token on the hot path.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from typing import Any, Literal

from gateway.sse import event as sse_event
from local_model import GenerationResult, GenerationStats, TokenLogprob
from local_model.values import value

Kind = Literal["chat", "text"]


@value
class ResponseMeta:
    """What every body of one response shares."""

    kind: Kind
    id: str
    created: int
    model: str
    #: the client asked for logprobs (the alternatives travel with each token)
    logprobs: bool

    @classmethod
    def new(cls, kind: Kind, model: str, *, logprobs: bool) -> ResponseMeta:
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        return cls(kind, f"{prefix}-{os.urandom(16).hex()}", int(time.time()), model, logprobs)


def usage(stats: GenerationStats) -> dict[str, int]:
    return {
        "prompt_tokens": stats.prompt_tokens,
        "completion_tokens": stats.completion_tokens,
        "total_tokens": stats.prompt_tokens + stats.completion_tokens,
    }


def chat_logprob_entries(tokens: Sequence[TokenLogprob]) -> list[dict[str, Any]]:
    return [
        {
            "token": t.text,
            "logprob": t.logprob,
            "bytes": list(t.piece),
            "top_logprobs": [
                {"token": alt.text, "logprob": alt.logprob, "bytes": list(alt.text.encode())}
                for alt in t.top
            ],
        }
        for t in tokens
    ]


def text_logprobs(tokens: Sequence[TokenLogprob], offset: int) -> dict[str, Any]:
    """Legacy completions shape: parallel lists, ``text_offset`` counted in characters."""
    offsets: list[int] = []
    for t in tokens:
        offsets.append(offset)
        offset += len(t.text)
    return {
        "tokens": [t.text for t in tokens],
        "token_logprobs": [t.logprob for t in tokens],
        "top_logprobs": [{alt.text: alt.logprob for alt in t.top} for t in tokens],
        "text_offset": offsets,
    }


def _finish(reason: str) -> str:
    # "cancelled" only happens when no one is listening; map it for completeness.
    return "stop" if reason == "cancelled" else reason


def completion_body(
    meta: ResponseMeta, result: GenerationResult, extra: dict[str, Any]
) -> dict[str, Any]:
    logprobs: dict[str, Any] | None = None
    if meta.kind == "chat":
        if meta.logprobs:
            logprobs = {"content": chat_logprob_entries(result.tokens)}
        choice: dict[str, Any] = {
            "index": 0,
            "message": {"role": "assistant", "content": result.text},
            "logprobs": logprobs,
            "finish_reason": _finish(result.finish_reason),
        }
        obj = "chat.completion"
    else:
        if meta.logprobs:
            logprobs = text_logprobs(result.tokens, 0)
        choice = {
            "index": 0,
            "text": result.text,
            "logprobs": logprobs,
            "finish_reason": _finish(result.finish_reason),
        }
        obj = "text_completion"
    return {
        "id": meta.id,
        "object": obj,
        "created": meta.created,
        "model": meta.model,
        "choices": [choice],
        "usage": usage(result.stats),
        **extra,
    }


class ChunkWriter:
    """Turns generation events into stream chunks for one response."""

    def __init__(self, meta: ResponseMeta, *, include_usage: bool) -> None:
        self.meta = meta
        self.include_usage = include_usage
        self._text_offset = 0
        # Text-only deltas are most of a stream: serialise their fixed parts once.
        marker = "\u0000MARK\u0000"
        template = json.dumps(self._text_choice(marker), separators=(",", ":"))
        head, tail = template.split(json.dumps(marker))
        self._text_head = b"data: " + head.encode()
        self._text_tail = tail.encode() + b"\n\n"

    def _text_choice(self, text: str) -> dict[str, Any]:
        if self.meta.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {"content": text},
                "logprobs": None,
                "finish_reason": None,
            }
        else:
            choice = {"index": 0, "text": text, "logprobs": None, "finish_reason": None}
        return self._chunk(choice)

    def delta_event(self, text: str, tokens: Sequence[TokenLogprob]) -> bytes | None:
        """The SSE event for :meth:`delta`, with a fast path for plain text."""
        if self.meta.logprobs and tokens:
            chunk = self.delta(text, tokens)
            return None if chunk is None else sse_event(chunk)
        self._text_offset += sum(len(t.text) for t in tokens)
        if not text:
            return None
        return self._text_head + json.dumps(text).encode() + self._text_tail

    def _chunk(self, choice: dict[str, Any] | None) -> dict[str, Any]:
        meta = self.meta
        body: dict[str, Any] = {
            "id": meta.id,
            "object": "chat.completion.chunk" if meta.kind == "chat" else "text_completion",
            "created": meta.created,
            "model": meta.model,
            "choices": [choice] if choice is not None else [],
        }
        if self.include_usage:
            body["usage"] = None
        return body

    def start(self) -> dict[str, Any] | None:
        if self.meta.kind != "chat":
            return None
        return self._chunk(
            {
                "index": 0,
                "delta": {"role": "assistant", "content": ""},
                "logprobs": None,
                "finish_reason": None,
            }
        )

    def delta(self, text: str, tokens: Sequence[TokenLogprob]) -> dict[str, Any] | None:
        """A chunk for released text and the tokens it came with (None if nothing to say)."""
        want_logprobs = self.meta.logprobs and bool(tokens)
        if not text and not want_logprobs:
            return None
        if self.meta.kind == "chat":
            logprobs = {"content": chat_logprob_entries(tokens)} if want_logprobs else None
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {"content": text},
                "logprobs": logprobs,
                "finish_reason": None,
            }
        else:
            text_lp = text_logprobs(tokens, self._text_offset) if want_logprobs else None
            choice = {"index": 0, "text": text, "logprobs": text_lp, "finish_reason": None}
        self._text_offset += sum(len(t.text) for t in tokens)
        return self._chunk(choice)

    def finish(self, reason: str) -> dict[str, Any]:
        if self.meta.kind == "chat":
            choice: dict[str, Any] = {
                "index": 0,
                "delta": {},
                "logprobs": None,
                "finish_reason": _finish(reason),
            }
        else:
            choice = {"index": 0, "text": "", "logprobs": None, "finish_reason": _finish(reason)}
        return self._chunk(choice)

    def usage(self, stats: GenerationStats) -> dict[str, Any]:
        body = self._chunk(None)
        body["usage"] = usage(stats)
        return body
