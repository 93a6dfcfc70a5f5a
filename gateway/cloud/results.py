"""What a cloud call hands back: values, no behaviour."""

from __future__ import annotations

from typing import Any

from local_model.values import value


@value
class CloudUsage:
    prompt_tokens: int
    completion_tokens: int


@value
class CloudResult:
    """A non-streamed answer."""

    #: the upstream's JSON body, its ``model`` rewritten to the id the client asked for
    body: dict[str, Any]
    #: from the body's ``usage``; None when the upstream sent none
    usage: CloudUsage | None
    #: HTTP attempts made (1 = no retry)
    attempts: int
    #: wall time, retries and waits included
    seconds: float


def usage_from(value: Any) -> CloudUsage | None:
    """The token counts of an OpenAI ``usage`` object, or None if it is absent or malformed."""
    if not isinstance(value, dict):
        return None
    prompt, completion = value.get("prompt_tokens"), value.get("completion_tokens")
    # type() rather than isinstance(): True is an int too.
    if type(prompt) is int and type(completion) is int and prompt >= 0 and completion >= 0:
        return CloudUsage(prompt_tokens=prompt, completion_tokens=completion)
    return None
