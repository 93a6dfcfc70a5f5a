"""``POST /v1/chat/completions`` and ``POST /v1/completions``."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from fastapi.responses import Response

import local_model
from gateway import local_route
from gateway.auth.middleware import principal_of
from gateway.cloud_route import CloudJob
from gateway.deps import Services, ServicesDep
from gateway.errors import ContextLengthExceededError, InvalidRequestError, ModelNotFoundError
from gateway.hybrid import Call
from gateway.openai_format import Kind, ResponseMeta
from gateway.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from gateway.trace import current_trace
from router import Message, RequestFacts

router = APIRouter(tags=["completions"])

# llama.cpp-server sampling extensions an OpenAI upstream would refuse.
_LOCAL_ONLY_FIELDS = {"top_k", "min_p", "repeat_penalty"}


# Tokenizing ~8 kB takes a few ms of C that would stall every other request on the
# loop; a thread hop costs more than that for short prompts, so only long ones move.
_LONG_PROMPT_CHARS = 8192
T = TypeVar("T")
A = TypeVar("A")


async def _off_loop_if_long(tokenize: Callable[[A], T], prompt: A, size: int) -> T:
    if size < _LONG_PROMPT_CHARS:
        return tokenize(prompt)
    return await asyncio.to_thread(tokenize, prompt)


def _chat_messages(body: ChatCompletionRequest) -> list[local_model.ChatMessage]:
    # "developer" is OpenAI's newer name for the system role.
    return [
        local_model.ChatMessage("system" if m.role == "developer" else m.role, m.content)
        for m in body.messages
    ]


async def _serve(
    request: Request,
    services: Services,
    kind: Kind,
    body: SamplingFields,
    prompt: list[int],
    messages: tuple[Message, ...],
    *,
    requested_max_tokens: int | None,
    max_tokens_param: str,
    logprobs: bool,
    top_logprobs: int,
    cloud_ok: bool = True,
) -> Response:
    policy = services.policies.current  # one policy for the whole request, even across a reload
    engine = services.engine
    trace = current_trace(request.state)
    if trace is not None:
        trace.model = body.model
        trace.stream = body.stream
        trace.prompt_tokens = len(prompt)
        trace.threshold = policy.gate.threshold
        if services.settings.ledger.store_content:
            trace.store_content = True
            trace.mask = policy.privacy.mask
            trace.prompt_text = "\n".join(f"{m.role}: {m.content}" for m in messages)
    limit = services.settings.limits.max_prompt_tokens
    if len(prompt) > limit:
        # Before the routing decision: no route, not even the cloud, takes it.
        raise ContextLengthExceededError(
            f"the prompt has {len(prompt)} tokens, more than this gateway's limit of {limit}",
            param="messages" if kind == "chat" else "prompt",
        )
    status = engine.status()
    facts = RequestFacts(
        model=body.model,
        messages=messages,
        prompt_tokens=len(prompt),
        max_tokens=requested_max_tokens,
        # A full queue would refuse the request: an unbounded wait for the load rules, even in
        # a cold burst, before any request has finished and a wait could be estimated.
        local_wait_seconds=math.inf if status.saturated else status.estimated_wait_seconds,
        cloud_configured=services.cloud is not None,
    )
    decision = policy.decide(facts)
    if decision is None:
        known = ", ".join(policy.model_ids(cloud_configured=services.cloud is not None))
        raise ModelNotFoundError(
            f"The model '{body.model}' does not exist; this gateway serves: {known}", param="model"
        )
    if not cloud_ok:
        decision = dataclasses.replace(decision, cloud_allowed=False)
    if trace is not None:
        trace.decision = decision
    local: local_route.LocalJob | None = None
    local_error: ContextLengthExceededError | None = None
    try:
        local = local_route.build_job(
            kind,
            body,
            prompt,
            requested_max_tokens=requested_max_tokens,
            max_tokens_param=max_tokens_param,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            engine=engine,
            settings=services.settings,
            trace=trace,
        )
    except ContextLengthExceededError as exc:  # the cloud may still take it
        local_error = exc
    meta = (
        local.meta if local is not None else ResponseMeta.new(kind, body.model, logprobs=logprobs)
    )
    payload: dict[str, Any] = body.model_dump(exclude_unset=True, exclude=_LOCAL_ONLY_FIELDS)
    cloud = CloudJob(
        kind=kind,
        payload=payload,
        meta=meta,
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        prompt_tokens=len(prompt),
        count_tokens=lambda text: len(engine.tokenizer.tokenize(text)) - 1,  # minus BOS
        upstream_model=services.settings.cloud.model,
        trace=trace,
    )
    principal = principal_of(request.state)
    limiter = services.limiter
    call = Call(
        decision=decision,
        local=local,
        local_error=local_error,
        cloud=cloud,
        budget_reset_s=(
            limiter.budget_reset_in(principal.key_id)
            if limiter is not None and principal is not None
            else None
        ),
    )
    return await services.dispatcher.serve(request, call, policy)


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, services: ServicesDep
) -> Response:
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequestError("top_logprobs requires logprobs=true", param="top_logprobs")
    max_messages = services.settings.limits.max_messages
    if len(body.messages) > max_messages:
        raise InvalidRequestError(
            f"too many messages: {len(body.messages)}, at most {max_messages}", param="messages"
        )
    chat = _chat_messages(body)
    try:
        prompt = await _off_loop_if_long(
            services.engine.tokenizer.tokenize_chat, chat, sum(len(m.content) for m in chat)
        )
    except ValueError as exc:  # the GGUF's template refused the conversation
        raise InvalidRequestError(
            f"the chat template rejected the messages: {exc}", param="messages"
        ) from exc
    return await _serve(
        request,
        services,
        "chat",
        body,
        prompt,
        tuple(Message(m.role, m.content) for m in chat),
        requested_max_tokens=body.requested_max_tokens,
        max_tokens_param="max_completion_tokens" if body.max_completion_tokens else "max_tokens",
        logprobs=body.logprobs,
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0,
    )


@router.post("/v1/completions", response_model=None)
async def create_completion(
    body: CompletionRequest, request: Request, services: ServicesDep
) -> Response:
    tokenizer = services.engine.tokenizer
    prompt_is_ids = False
    if isinstance(body.prompt, str) or isinstance(body.prompt[0], str):
        text = body.prompt if isinstance(body.prompt, str) else str(body.prompt[0])
        prompt = await _off_loop_if_long(tokenizer.tokenize, text, len(text))
    else:
        prompt = [int(t) for t in body.prompt]
        n_vocab = services.engine.info.n_vocab
        if any(not 0 <= t < n_vocab for t in prompt):
            raise InvalidRequestError(
                f"prompt token ids must lie in [0, {n_vocab})", param="prompt"
            )
        text = ""  # token ids carry no text the rules could read
        prompt_is_ids = True
    return await _serve(
        request,
        services,
        "text",
        body,
        prompt,
        (Message("user", text),),
        # legacy completions always carry max_tokens (OpenAI's default is 16)
        requested_max_tokens=body.max_tokens,
        max_tokens_param="max_tokens",
        logprobs=body.logprobs is not None,
        top_logprobs=body.logprobs or 0,
        # token ids are in the local model's vocabulary: meaningless to the cloud
        cloud_ok=not prompt_is_ids,
    )
