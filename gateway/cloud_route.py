"""Carrying a request out on the cloud endpoint, in our own response shapes."""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from fastapi.responses import Response
from starlette.requests import Request

from gateway import sse
from gateway.cloud import CloudResult, CloudUsage
from gateway.disconnect import ClientDisconnected, cancel_on_disconnect
from gateway.errors import GatewayError
from gateway.jsonio import JSONBody
from gateway.openai_format import Kind, ResponseMeta
from gateway.outcome import Outcome
from gateway.streaming import SSEResponse
from gateway.trace import RequestTrace
from local_model.values import value

logger = logging.getLogger(__name__)


class CloudStreamLike(Protocol):
    usage: CloudUsage | None
    attempts: int

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]: ...

    async def aclose(self) -> None: ...


class Cloud(Protocol):
    """What the gateway needs from the cloud client (gateway.cloud.CloudClient)."""

    async def complete(
        self, endpoint: Kind, payload: dict[str, Any], *, response_model: str
    ) -> CloudResult: ...

    def stream(
        self, endpoint: Kind, payload: dict[str, Any], *, response_model: str
    ) -> CloudStreamLike: ...

    def breaker_state(self) -> dict[str, Any]: ...

    async def aclose(self) -> None: ...


@value
class CloudJob:
    kind: Kind
    #: the client's request as sent (validated), minus local-only extensions
    payload: dict[str, Any]
    meta: ResponseMeta
    stream: bool
    include_usage: bool
    #: prompt length by the local tokenizer: the usage estimate when the upstream sends none
    count_prompt_tokens: Callable[[], int]
    #: counts tokens of relayed text when the upstream reports no usage
    count_tokens: Callable[[str], int]
    #: the upstream's model name (GATEWAY_CLOUD__MODEL), for the ledger
    upstream_model: str = ""
    trace: RequestTrace | None = None


async def complete(request: Request, cloud: Cloud, job: CloudJob, outcome: Outcome) -> Response:
    started = time.perf_counter()
    try:
        result = await cancel_on_disconnect(
            request.receive, cloud.complete(job.kind, job.payload, response_model=job.meta.model)
        )
    except ClientDisconnected:
        logger.info("client disconnected; cloud request abandoned")
        _note(job, started, 1, None)
        return Response(status_code=499)
    except BaseException:
        # Failed calls report no attempt count: count the call once.
        _note(job, started, 1, None)
        raise
    _note(job, started, result.attempts, result.usage)
    if job.trace is not None:
        job.trace.answer(_text_of(result.body, key="message"))
    return JSONBody({**result.body, **outcome.body_field()}, headers=outcome.headers())


def _note(job: CloudJob, started: float, attempts: int, usage: CloudUsage | None) -> None:
    if job.trace is not None:
        job.trace.cloud_call(job.upstream_model, time.perf_counter() - started, attempts, usage)


@dataclass
class OpenedStream:
    """A cloud stream whose first chunk has arrived: from here on, no retry and no switch."""

    upstream: CloudStreamLike
    chunks: AsyncIterator[dict[str, Any]]
    first: dict[str, Any] | None
    started: float


async def open_stream(request: Request, cloud: Cloud, job: CloudJob) -> OpenedStream | None:
    """Start the upstream stream and wait for its first chunk (None: the client left).

    Errors before the first chunk propagate, so the caller can still answer
    with a status code or fall back to the local model.
    """
    started = time.perf_counter()
    try:
        upstream = cloud.stream(job.kind, job.payload, response_model=job.meta.model)
    except BaseException:
        _note(job, started, 1, None)
        raise
    chunks = aiter(upstream)
    try:
        first = await cancel_on_disconnect(request.receive, anext(chunks, None))
    except BaseException as exc:
        await upstream.aclose()
        _note(job, started, max(1, upstream.attempts), None)
        if isinstance(exc, ClientDisconnected):
            return None
        raise
    return OpenedStream(upstream, chunks, first, started)


def _text_of(chunk: dict[str, Any], key: str = "delta") -> str:
    """The text of a chunk (``delta``) or of a whole answer (``message``)."""
    parts: list[str] = []
    for choice in chunk.get("choices") or ():
        delta = choice.get(key)
        text = delta.get("content") if isinstance(delta, dict) else choice.get("text")
        if isinstance(text, str):
            parts.append(text)
    return "".join(parts)


async def relay(opened: OpenedStream, job: CloudJob) -> AsyncIterator[bytes]:
    """Upstream chunks as our own SSE events: our id and model, our usage chunk."""
    meta = job.meta
    relayed: list[str] = []
    usage: CloudUsage | None = None

    def ours(chunk: dict[str, Any]) -> bytes:
        chunk["id"] = meta.id
        chunk["model"] = meta.model
        chunk.pop("usage", None)
        if job.include_usage:
            chunk["usage"] = None
        relayed.append(_text_of(chunk))
        return sse.event(chunk)

    try:
        if opened.first is not None:
            yield ours(opened.first)
        async for chunk in opened.chunks:
            yield ours(chunk)
        usage = opened.upstream.usage
        if job.include_usage:
            if usage is None:
                completion = job.count_tokens("".join(relayed))
                usage = CloudUsage(
                    prompt_tokens=job.count_prompt_tokens(), completion_tokens=completion
                )
                logger.info("upstream sent no usage; counted %d tokens locally", completion)
            yield sse.event(
                {
                    "id": meta.id,
                    "object": "chat.completion.chunk" if meta.kind == "chat" else "text_completion",
                    "created": meta.created,
                    "model": meta.model,
                    "choices": [],
                    "usage": {
                        "prompt_tokens": usage.prompt_tokens,
                        "completion_tokens": usage.completion_tokens,
                        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
                    },
                }
            )
        yield sse.DONE
    except GatewayError as exc:  # after the first byte: report in-band
        logger.warning("cloud stream failed after the first byte: %s", exc.message)
        if job.trace is not None:
            job.trace.error = exc.code or exc.error_type
        yield sse.event(exc.body())
    finally:
        await opened.upstream.aclose()
        if usage is None:
            usage = opened.upstream.usage or CloudUsage(
                prompt_tokens=job.count_prompt_tokens(),
                completion_tokens=job.count_tokens("".join(relayed)),
            )
        _note(job, opened.started, max(1, opened.upstream.attempts), usage)
        if job.trace is not None:
            job.trace.answer("".join(relayed))


def stream_response(opened: OpenedStream, job: CloudJob, outcome: Outcome) -> SSEResponse:
    return SSEResponse(
        relay(opened, job), on_close=opened.upstream.aclose, headers=outcome.headers()
    )
