"""Carrying a request out on the local model: limits, sampling, response shapes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from gateway import sse
from gateway.disconnect import ClientDisconnected, cancel_on_disconnect
from gateway.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    from_engine_error,
    translate_engine_errors,
)
from gateway.openai_format import ChunkWriter, Kind, ResponseMeta, completion_body
from gateway.schemas import SamplingFields
from gateway.settings import Settings
from local_model import (
    GenerationRequest,
    SamplingParams,
    TokenEvent,
)
from local_model.engine import Engine
from local_model.generation import Generation
from router import Decision

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalJob:
    request: GenerationRequest
    meta: ResponseMeta
    stream: bool
    include_usage: bool


def sampling_from(body: SamplingFields, settings: Settings) -> SamplingParams:
    defaults = settings.local.sampling
    return SamplingParams(
        temperature=body.temperature if body.temperature is not None else defaults.temperature,
        top_p=body.top_p if body.top_p is not None else defaults.top_p,
        top_k=body.top_k if body.top_k is not None else defaults.top_k,
        min_p=body.min_p if body.min_p is not None else defaults.min_p,
        repeat_penalty=body.repeat_penalty if body.repeat_penalty is not None else 1.0,
        frequency_penalty=body.frequency_penalty,
        presence_penalty=body.presence_penalty,
        seed=body.seed,
    )


def completion_budget(
    prompt_tokens: int,
    requested: int | None,
    *,
    n_ctx: int,
    settings: Settings,
    param: str,
    prompt_param: str,
) -> int:
    """How many tokens may be generated; raise when the request cannot fit."""
    if prompt_tokens >= n_ctx:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {n_ctx} tokens. "
            f"However, your prompt resulted in {prompt_tokens} tokens.",
            param=prompt_param,
        )
    cap = settings.limits.max_completion_tokens
    if requested is None:
        return min(settings.local.sampling.max_tokens, cap, n_ctx - prompt_tokens)
    if requested > cap:
        raise InvalidRequestError(
            f"{param} is too large: {requested}; this gateway allows at most {cap}", param=param
        )
    if prompt_tokens + requested > n_ctx:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the prompt, "
            f"{requested} for the completion). Please reduce the prompt or {param}.",
            param=param,
        )
    return requested


def check_stop(stop: list[str] | None, settings: Settings) -> tuple[str, ...]:
    stops = tuple(stop or ())
    limit = settings.limits.max_stop_sequences
    if len(stops) > limit:
        raise InvalidRequestError(f"at most {limit} stop sequences are allowed", param="stop")
    return stops


def build_job(
    kind: Kind,
    body: SamplingFields,
    prompt: list[int],
    *,
    requested_max_tokens: int | None,
    max_tokens_param: str,
    logprobs: bool,
    top_logprobs: int,
    engine: Engine,
    settings: Settings,
) -> LocalJob:
    """Validate a request against the model and limits; raise before any work starts."""
    max_tokens = completion_budget(
        len(prompt),
        requested_max_tokens,
        n_ctx=engine.info.n_ctx,
        settings=settings,
        param=max_tokens_param,
        prompt_param="messages" if kind == "chat" else "prompt",
    )
    return LocalJob(
        request=GenerationRequest(
            prompt_tokens=tuple(prompt),
            max_tokens=max_tokens,
            sampling=sampling_from(body, settings),
            stop=check_stop(body.stop, settings),
            top_logprobs=top_logprobs,
        ),
        meta=ResponseMeta.new(kind, body.model, logprobs=logprobs, top_logprobs=top_logprobs),
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
    )


def submit(engine: Engine, job: LocalJob) -> Generation:
    with translate_engine_errors():
        return engine.submit(job.request)


async def complete(generation: Generation, job: LocalJob, extra: dict[str, Any]) -> dict[str, Any]:
    with translate_engine_errors():
        result = await generation.result()
    return completion_body(job.meta, result, extra)


async def stream(generation: Generation, job: LocalJob) -> AsyncIterator[bytes]:
    """SSE bytes for one generation; errors after the first byte become an error event."""
    writer = ChunkWriter(job.meta, include_usage=job.include_usage)
    start = writer.start()
    if start is not None:
        yield sse.event(start)
    try:
        # One write per delivered batch: each send wakes the client.
        async for batch in generation.batches():
            out: list[bytes] = []
            for event in batch:
                if isinstance(event, TokenEvent):
                    data = writer.delta_event(event.text, (event.token,))
                    if data is not None:
                        out.append(data)
                else:
                    tail = writer.delta_event(event.text, ())
                    if tail is not None:
                        out.append(tail)
                    out.append(sse.event(writer.finish(event.finish_reason)))
                    if job.include_usage:
                        out.append(sse.event(writer.usage(event.stats)))
                    out.append(sse.DONE)
            if out:
                yield b"".join(out)
    except Exception as exc:  # the status line is long gone: report in-band
        error = from_engine_error(exc)
        logger.warning("local stream failed after the first byte: %s", error.message)
        yield sse.event(error.body())
    finally:
        generation.cancel()


class GenerationStreamResponse(StreamingResponse):
    """Cancels the generation however the response ends.

    The body generator's own ``finally`` only runs if iteration started; a
    client that leaves before the first byte must stop the model too.
    """

    def __init__(self, generation: Generation, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._generation = generation

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._generation.cancel()


def route_headers(decision: Decision) -> dict[str, str]:
    return {"x-hybrid-route": decision.route, "x-hybrid-reason": decision.reason}


def decision_field(decision: Decision) -> dict[str, Any]:
    """Extra top-level body field; OpenAI clients ignore unknown fields."""
    return {"hybrid": {"route": decision.route, "reason": decision.reason}}


async def respond(request: Request, engine: Engine, job: LocalJob, decision: Decision) -> Response:
    generation = submit(engine, job)
    headers = route_headers(decision)
    if job.stream:
        return GenerationStreamResponse(
            generation,
            stream(generation, job),
            media_type=sse.MEDIA_TYPE,
            headers={**sse.HEADERS, **headers},
        )
    try:
        body = await cancel_on_disconnect(
            request, complete(generation, job, decision_field(decision))
        )
    except ClientDisconnected:
        logger.info("client disconnected; local generation stopped")
        return Response(status_code=499)
    finally:
        generation.cancel()
    return JSONResponse(body, headers=headers)
