"""What the gateway knows about a request before anything is generated."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Literal

Scope = Literal["last_user", "all"]


@dataclass(frozen=True)
class Message:
    role: str  # "system" | "user" | "assistant"
    content: str


@dataclass(frozen=True)
class PromptSize:
    """A prompt's length in local-model tokens, or a bound on it until it is counted.

    Counting means tokenizing, which costs about a microsecond per byte with
    llama.cpp's tokenizer: a request routed to the cloud need not pay it when
    a cheap upper bound (every token covers at least one byte) already settles
    every length condition. The caller counts first when the bound does not
    (gateway.routes.completions); :meth:`over` refuses to guess.
    """

    #: at least the exact count
    upper_bound: int
    #: the exact count, when the prompt was tokenized
    exact: int | None = None

    @classmethod
    def counted(cls, tokens: int) -> PromptSize:
        return cls(tokens, tokens)

    def over(self, limit: int) -> bool:
        """Whether the prompt has more than ``limit`` tokens."""
        if self.exact is not None:
            return self.exact > limit
        if self.upper_bound <= limit:
            return False
        raise LookupError(f"the prompt must be counted to compare it with {limit} tokens")


@dataclass(frozen=True)
class RequestFacts:
    #: the model id the client asked for
    model: str
    #: legacy completions arrive as one ("user", prompt) message
    messages: tuple[Message, ...]
    #: length in the local model's tokens (or a bound on it; see PromptSize)
    prompt: PromptSize
    #: what the client asked for; None when it did not set one
    max_tokens: int | None
    #: estimated wait before the local model could start this request
    local_wait_seconds: float
    #: a cloud endpoint exists
    cloud_configured: bool

    # Several rules and the privacy floor look at the same text: joining (and
    # lower-casing) a long conversation once per request keeps their cost per
    # pattern rather than per pattern and message.
    @cached_property
    def _last_user(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.content
        return ""

    @cached_property
    def _all(self) -> str:
        return "\n".join(message.content for message in self.messages)

    @cached_property
    def _last_user_lower(self) -> str:
        return self._last_user.lower()

    @cached_property
    def _all_lower(self) -> str:
        return self._all.lower()

    def text(self, scope: Scope) -> str:
        """The text a scope covers: the last user message, or every message joined."""
        return self._last_user if scope == "last_user" else self._all

    def lower_text(self, scope: Scope) -> str:
        return self._last_user_lower if scope == "last_user" else self._all_lower
