"""``POST /v1/chat/completions`` and ``POST /v1/completions``."""

from __future__ import annotations

import asyncio
import dataclasses
import math
from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import Response

import local_model
from gateway import local_route
from gateway.auth.middleware import principal_of
from gateway.cloud_route import CloudJob
from gateway.deps import Services, services_of
from gateway.errors import ContextLengthExceededError, InvalidRequestError, ModelNotFoundError
from gateway.hybrid import Call
from gateway.openai_format import Kind, ResponseMeta
from gateway.schemas import ChatCompletionRequest, CompletionRequest, SamplingFields
from gateway.trace import current_trace
from router import Message, PromptSize, RequestFacts

router = APIRouter(tags=["completions"])

# llama.cpp-server sampling extensions an OpenAI upstream would refuse.
_LOCAL_ONLY_FIELDS = {"top_k", "min_p", "repeat_penalty"}


# Tokenizing ~8 kB takes a few ms of C that would stall every other request on the
# loop; a thread hop costs more than that for short prompts, so only long ones move.
_LONG_PROMPT_CHARS = 8192


class LazyPrompt:
    """A request's prompt in local-model tokens, tokenized at most once, when needed.

    llama.cpp's tokenizer costs about a microsecond per byte, a sixth of the
    gateway's CPU per request on the cloud route; a request the cloud answers
    needs no tokens unless a length limit or rule cannot be settled by the
    upper bound (see router.PromptSize).
    """

    def __init__(self, tokenize: Callable[[], list[int]], *, upper_bound: int, chars: int) -> None:
        self._tokenize = tokenize
        self._tokens: list[int] | None = None
        self.upper_bound = upper_bound
        self._chars = chars

    @classmethod
    def of_ids(cls, ids: list[int]) -> LazyPrompt:
        prompt = cls(lambda: ids, upper_bound=len(ids), chars=0)
        prompt._tokens = ids
        return prompt

    @property
    def size(self) -> PromptSize:
        tokens = self._tokens
        return PromptSize(self.upper_bound, None if tokens is None else len(tokens))

    async def tokens(self) -> list[int]:
        if self._tokens is None:
            if self._chars < _LONG_PROMPT_CHARS:
                self._tokens = self._tokenize()
            else:
                self._tokens = await asyncio.to_thread(self._tokenize)
        return self._tokens

    def count_now(self) -> int:
        """The exact count, tokenizing on the calling thread if nothing has yet."""
        if self._tokens is None:
            self._tokens = self._tokenize()
        return len(self._tokens)


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
    prompt: LazyPrompt,
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
    settings = services.settings
    trace = current_trace(request.state)
    limit = settings.limits.max_prompt_tokens
    # Count the tokens only if the limit or a length rule could turn on the exact figure.
    thresholds = policy.prompt_token_thresholds()
    if prompt.upper_bound > min((limit, *thresholds)):
        await prompt.tokens()
    size = prompt.size
    if trace is not None:
        trace.model = body.model
        trace.stream = body.stream
        trace.prompt_tokens = size.exact
        trace.threshold = policy.gate.threshold
        if settings.ledger.store_content:
            trace.store_content = True
            trace.mask = policy.privacy.mask
            trace.prompt_text = "\n".join(f"{m.role}: {m.content}" for m in messages)
    if size.over(limit):
        # Before the routing decision: no route, not even the cloud, takes it.
        raise ContextLengthExceededError(
            f"the prompt has {size.exact} tokens, more than this gateway's limit of {limit}",
            param="messages" if kind == "chat" else "prompt",
        )
    local_route.check_request(body, requested_max_tokens, settings, param=max_tokens_param)
    status = engine.status()
    facts = RequestFacts(
        model=body.model,
        messages=messages,
        prompt=size,
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
    meta = ResponseMeta.new(kind, body.model, logprobs=logprobs)

    async def prepare_local() -> local_route.LocalJob:
        tokens = await prompt.tokens()
        if trace is not None:
            trace.prompt_tokens = len(tokens)
        return local_route.build_job(
            kind,
            body,
            tokens,
            requested_max_tokens=requested_max_tokens,
            max_tokens_param=max_tokens_param,
            logprobs=logprobs,
            top_logprobs=top_logprobs,
            engine=engine,
            settings=settings,
            trace=trace,
            meta=meta,
            # Only a gate that reads them pays for them (about 2% of decode speed).
            entropies=policy.gate.needs_entropies,
        )

    payload: dict[str, Any] = body.model_dump(exclude_unset=True, exclude=_LOCAL_ONLY_FIELDS)
    cloud = CloudJob(
        kind=kind,
        payload=payload,
        meta=meta,
        stream=body.stream,
        include_usage=bool(body.stream_options and body.stream_options.include_usage),
        count_prompt_tokens=prompt.count_now,
        count_tokens=lambda text: len(engine.tokenizer.tokenize(text)) - 1,  # minus BOS
        upstream_model=settings.cloud.model,
        trace=trace,
    )
    principal = principal_of(request.state)
    limiter = services.limiter
    call = Call(
        decision=decision,
        cloud=cloud,
        prepare_local=prepare_local,
        budget_reset_s=(
            limiter.budget_reset_in(principal.key_id)
            if limiter is not None and principal is not None
            else None
        ),
    )
    return await services.dispatcher.serve(request, call, policy)


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(body: ChatCompletionRequest, request: Request) -> Response:
    services = services_of(request)
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequestError("top_logprobs requires logprobs=true", param="top_logprobs")
    max_messages = services.settings.limits.max_messages
    if len(body.messages) > max_messages:
        raise InvalidRequestError(
            f"too many messages: {len(body.messages)}, at most {max_messages}", param="messages"
        )
    chat = _chat_messages(body)
    tokenizer = services.engine.tokenizer
    try:
        rendered = tokenizer.render_chat(chat)
    except ValueError as exc:  # the GGUF's template refused the conversation
        raise InvalidRequestError(
            f"the chat template rejected the messages: {exc}", param="messages"
        ) from exc
    prompt = LazyPrompt(
        lambda: tokenizer.tokenize_rendered(rendered),
        upper_bound=len(rendered.encode("utf-8")),
        chars=len(rendered),
    )
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
async def create_completion(body: CompletionRequest, request: Request) -> Response:
    services = services_of(request)
    tokenizer = services.engine.tokenizer
    prompt_is_ids = False
    if isinstance(body.prompt, str) or isinstance(body.prompt[0], str):
        text = body.prompt if isinstance(body.prompt, str) else str(body.prompt[0])
        # BOS and EOS at most, beyond one token per byte.
        prompt = LazyPrompt(
            lambda: tokenizer.tokenize(text), upper_bound=len(text.encode()) + 2, chars=len(text)
        )
    else:
        ids = [int(t) for t in body.prompt]
        n_vocab = services.engine.info.n_vocab
        if any(not 0 <= t < n_vocab for t in ids):
            raise InvalidRequestError(
                f"prompt token ids must lie in [0, {n_vocab})", param="prompt"
            )
        prompt = LazyPrompt.of_ids(ids)
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
