"""Building RequestFacts in tests without repeating every field."""

from __future__ import annotations

from router import Message, PromptSize, RequestFacts


def facts(
    text: str = "Name a colour",
    *,
    model: str = "hybrid",
    system: str | None = None,
    history: tuple[Message, ...] = (),
    prompt_tokens: int = 10,
    max_tokens: int | None = None,
    local_wait_seconds: float = 0.0,
    cloud_configured: bool = True,
) -> RequestFacts:
    messages = ((Message("system", system),) if system is not None else ()) + history
    return RequestFacts(
        model=model,
        messages=(*messages, Message("user", text)),
        prompt=PromptSize.counted(prompt_tokens),
        max_tokens=max_tokens,
        local_wait_seconds=local_wait_seconds,
        cloud_configured=cloud_configured,
    )
