"""Carrying a request out on the local model: limits, sampling, response shapes."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

from fastapi.responses import Response
from starlette.requests import Request

from gateway import sse
from gateway.disconnect import ClientDisconnected, cancel_on_disconnect
from gateway.errors import (
    ContextLengthExceededError,
    InvalidRequestError,
    from_engine_error,
    translate_engine_errors,
)
from gateway.jsonio import JSONBody
from gateway.openai_format import ChunkWriter, Kind, ResponseMeta, completion_body
from gateway.outcome import Outcome
from gateway.schemas import SamplingFields
from gateway.settings import Settings
from gateway.streaming import SSEResponse
from gateway.trace import RequestTrace
from local_model import (
    GenerationDone,
    GenerationRequest,
    GenerationResult,
    SamplingParams,
    TokenEvent,
    TokenLogprob,
)
from local_model.engine import Engine
from local_model.generation import Event, Generation

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalJob:
    request: GenerationRequest
    meta: ResponseMeta
    stream: bool
    include_usage: bool
    #: where this request's ledger facts go (None outside a traced request)
    trace: RequestTrace | None = None


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
    check_max_tokens(requested, settings, param=param)
    if prompt_tokens + requested > n_ctx:
        raise ContextLengthExceededError(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{prompt_tokens + requested} tokens ({prompt_tokens} in the prompt, "
            f"{requested} for the completion). Please reduce the prompt or {param}.",
            param=param,
        )
    return requested


def check_max_tokens(requested: int | None, settings: Settings, *, param: str) -> None:
    cap = settings.limits.max_completion_tokens
    if requested is not None and requested > cap:
        raise InvalidRequestError(
            f"{param} is too large: {requested}; this gateway allows at most {cap}", param=param
        )


def check_request(
    body: SamplingFields, requested_max_tokens: int | None, settings: Settings, *, param: str
) -> None:
    """What build_job would refuse whatever the prompt: checked for every route, before
    routing, so a request the cloud takes is held to the same limits."""
    check_max_tokens(requested_max_tokens, settings, param=param)
    check_stop(body.stop, settings)


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
    trace: RequestTrace | None = None,
    meta: ResponseMeta | None = None,
    entropies: bool = False,
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
            entropies=entropies,
        ),
        meta=meta if meta is not None else ResponseMeta.new(kind, body.model, logprobs=logprobs),
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        trace=trace,
    )


def submit(engine: Engine, job: LocalJob) -> Generation:
    with translate_engine_errors():
        generation = engine.submit(job.request)
    if job.trace is not None:
        job.trace.generations.append(generation)
    return generation


@dataclass(frozen=True)
class Evidence:
    """What the confidence gate judges a local answer on."""

    #: each token's log-probability
    logprobs: list[float]
    #: each token's entropy; None when the engine did not report them all
    entropies: list[float] | None

    @classmethod
    def of(cls, tokens: Sequence[TokenLogprob]) -> Evidence:
        entropies = [t.entropy for t in tokens if t.entropy is not None]
        return cls(
            [t.logprob for t in tokens], entropies if len(entropies) == len(tokens) else None
        )


@dataclass
class HeldBack:
    """The first tokens of a streamed generation, kept from the client until judged."""

    events: list[Event]
    rest: AsyncIterator[list[Event]]
    #: the generation ended within the hold-back window
    finished: bool
    #: the running minimum log-probability fell below the policy's hard floor
    aborted: bool

    @property
    def logprobs(self) -> list[float]:
        return [e.token.logprob for e in self.events if isinstance(e, TokenEvent)]

    @property
    def evidence(self) -> Evidence:
        return Evidence.of([e.token for e in self.events if isinstance(e, TokenEvent)])


async def hold_back(generation: Generation, tokens: int, floor: float | None) -> HeldBack:
    """Collect at least ``tokens`` tokens (or all of a shorter answer) without sending any.

    ``tokens == 0`` collects the whole answer (the policy's "judge it all" setting).
    """
    batches = generation.batches()
    held = HeldBack([], batches, finished=False, aborted=False)
    count = 0
    with translate_engine_errors():
        while count < tokens or tokens <= 0:
            try:
                batch = await anext(batches)
            except StopAsyncIteration:
                held.finished = True
                break
            held.events.extend(batch)
            for event in batch:
                if isinstance(event, TokenEvent):
                    count += 1
                    if floor is not None and event.token.logprob < floor:
                        held.aborted = True
                else:
                    held.finished = True
            if held.finished or held.aborted:
                break
    if held.aborted:
        generation.cancel()
    return held


async def run_to_end(
    generation: Generation, floor: float | None
) -> tuple[GenerationResult | None, Evidence]:
    """The whole local answer, or None when it fell below the hard floor (then cancelled),
    and the gate's evidence (of the tokens generated until then)."""
    with translate_engine_errors():
        if floor is None:
            result = await generation.result()
            return result, Evidence.of(result.tokens)
        held = await hold_back(generation, 0, floor)
    if held.aborted:
        return None, held.evidence
    done = held.events[-1]
    assert isinstance(done, GenerationDone)
    tokens = tuple(e.token for e in held.events if isinstance(e, TokenEvent))
    result = GenerationResult(
        text="".join(e.text for e in held.events),
        tokens=tokens,
        finish_reason=done.finish_reason,
        stats=done.stats,
    )
    return result, Evidence.of(tokens)


async def complete(generation: Generation, job: LocalJob, extra: dict[str, Any]) -> dict[str, Any]:
    with translate_engine_errors():
        result = await generation.result()
    return body_of(job, result, extra)


def body_of(job: LocalJob, result: GenerationResult, extra: dict[str, Any]) -> dict[str, Any]:
    if job.trace is not None:
        job.trace.answer(result.text)
    return completion_body(job.meta, result, extra)


def _encode(writer: ChunkWriter, job: LocalJob, batch: Sequence[Event]) -> bytes:
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
    return b"".join(out)


async def stream(
    generation: Generation, job: LocalJob, held: HeldBack | None = None
) -> AsyncIterator[bytes]:
    """SSE bytes for one generation; errors after the first byte become an error event."""
    writer = ChunkWriter(job.meta, include_usage=job.include_usage)
    keep = job.trace is not None and job.trace.store_content
    sent: list[str] = []
    start = writer.start()
    first = sse.event(start) if start is not None else b""
    try:
        if held is not None:
            if keep:
                sent.extend(e.text for e in held.events)
            yield first + _encode(writer, job, held.events)
            first = b""
            batches = held.rest
        else:
            batches = generation.batches()
        # One write per delivered batch: each send wakes the client. The role
        # chunk goes with the first token, so the first byte means a token.
        async for batch in batches:
            if keep:
                sent.extend(e.text for e in batch)
            data = first + _encode(writer, job, batch)
            first = b""
            if data:
                yield data
    except Exception as exc:  # the status line is long gone: report in-band
        error = from_engine_error(exc)
        logger.warning("local stream failed after the first byte: %s", error.message)
        if job.trace is not None:
            job.trace.error = error.code or error.error_type
        yield sse.event(error.body())
    finally:
        generation.cancel()
        if keep and job.trace is not None:
            job.trace.answer("".join(sent))


def stream_response(
    generation: Generation, job: LocalJob, outcome: Outcome, held: HeldBack | None = None
) -> SSEResponse:
    return SSEResponse(
        stream(generation, job, held), on_close=generation.cancel, headers=outcome.headers()
    )


async def respond(request: Request, engine: Engine, job: LocalJob, outcome: Outcome) -> Response:
    """Answer from the local model, no gate."""
    generation = submit(engine, job)
    if job.stream:
        return stream_response(generation, job, outcome)
    try:
        body = await cancel_on_disconnect(
            request.receive, complete(generation, job, outcome.body_field())
        )
    except ClientDisconnected:
        logger.info("client disconnected; local generation stopped")
        return Response(status_code=499)
    finally:
        generation.cancel()
    return JSONBody(body, headers=outcome.headers())
