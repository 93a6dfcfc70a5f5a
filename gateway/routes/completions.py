"""``POST /v1/chat/completions`` and ``POST /v1/completions``."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import Response

import local_model
from gateway import local_route
from gateway.deps import Services, ServicesDep
from gateway.errors import InvalidRequestError, ModelNotFoundError
from gateway.schemas import ChatCompletionRequest, CompletionRequest
from router import Decision

router = APIRouter(tags=["completions"])


def _decide(services: Services, model: str) -> Decision:
    decision = services.catalog.decide(model)
    if decision is None:
        known = ", ".join(services.catalog.ids())
        raise ModelNotFoundError(
            f"The model '{model}' does not exist; this gateway serves: {known}", param="model"
        )
    return decision


def _chat_messages(body: ChatCompletionRequest) -> list[local_model.ChatMessage]:
    # "developer" is OpenAI's newer name for the system role.
    return [
        local_model.ChatMessage("system" if m.role == "developer" else m.role, m.content)
        for m in body.messages
    ]


@router.post("/v1/chat/completions", response_model=None)
async def create_chat_completion(
    body: ChatCompletionRequest, request: Request, services: ServicesDep
) -> Response:
    decision = _decide(services, body.model)
    if body.top_logprobs is not None and not body.logprobs:
        raise InvalidRequestError("top_logprobs requires logprobs=true", param="top_logprobs")
    engine = services.engine
    try:
        prompt = engine.tokenizer.tokenize_chat(_chat_messages(body))
    except ValueError as exc:  # the GGUF's template refused the conversation
        raise InvalidRequestError(
            f"the chat template rejected the messages: {exc}", param="messages"
        ) from exc
    param = "max_completion_tokens" if body.max_completion_tokens else "max_tokens"
    job = local_route.build_job(
        "chat",
        body,
        prompt,
        requested_max_tokens=body.requested_max_tokens,
        max_tokens_param=param,
        logprobs=body.logprobs,
        top_logprobs=(body.top_logprobs or 0) if body.logprobs else 0,
        engine=engine,
        settings=services.settings,
    )
    return await local_route.respond(request, engine, job, decision)


@router.post("/v1/completions", response_model=None)
async def create_completion(
    body: CompletionRequest, request: Request, services: ServicesDep
) -> Response:
    decision = _decide(services, body.model)
    engine = services.engine
    if isinstance(body.prompt, str):
        prompt = engine.tokenizer.tokenize(body.prompt)
    elif isinstance(body.prompt[0], str):
        prompt = engine.tokenizer.tokenize(str(body.prompt[0]))
    else:
        prompt = [int(t) for t in body.prompt]
        n_vocab = engine.info.n_vocab
        if any(not 0 <= t < n_vocab for t in prompt):
            raise InvalidRequestError(
                f"prompt token ids must lie in [0, {n_vocab})", param="prompt"
            )
    job = local_route.build_job(
        "text",
        body,
        prompt,
        requested_max_tokens=body.max_tokens,
        max_tokens_param="max_tokens",
        logprobs=body.logprobs is not None,
        top_logprobs=body.logprobs or 0,
        engine=engine,
        settings=services.settings,
    )
    return await local_route.respond(request, engine, job, decision)
