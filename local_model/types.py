"""Values the engine takes and gives: frozen dataclasses, no behaviour."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from local_model.values import value

FinishReason = Literal["stop", "length", "cancelled"]


@value
class ChatMessage:
    role: str
    content: str


@value
class SamplingParams:
    """Sampler settings; ``temperature == 0`` means greedy decoding."""

    temperature: float = 0.8
    top_p: float = 0.95
    top_k: int = 40
    min_p: float = 0.05
    repeat_penalty: float = 1.0
    frequency_penalty: float = 0.0
    presence_penalty: float = 0.0
    seed: int | None = None


@value
class GenerationRequest:
    prompt_tokens: tuple[int, ...]
    max_tokens: int
    sampling: SamplingParams = field(default_factory=SamplingParams)
    stop: tuple[str, ...] = ()
    #: alternatives to report per generated token (OpenAI ``top_logprobs``); 0 = none
    top_logprobs: int = 0
    #: report each token's entropy too (one more pass over the vocabulary per token:
    #: asked for only when the confidence gate or an evaluation uses it)
    entropies: bool = False


@value
class TopLogprob:
    token_id: int
    text: str
    logprob: float


@value
class TokenLogprob:
    """One generated token and the log-probability the model gave it.

    ``logprob`` is log-softmax of the raw logits (before temperature and
    truncation samplers), the same quantity OpenAI reports; ``entropy`` is the
    entropy (nats) of that same distribution over the whole vocabulary, the
    model's uncertainty about this position whichever token was sampled. None
    when the engine did not compute it.
    """

    token_id: int
    text: str
    piece: bytes
    logprob: float
    top: tuple[TopLogprob, ...] = ()
    entropy: float | None = None


@value
class TokenEvent:
    """A generated token, plus the text released to the client with it.

    ``text`` may be empty (an incomplete UTF-8 sequence, or text held back
    because it could be the start of a stop string) or hold text of earlier
    tokens released late.
    """

    text: str
    token: TokenLogprob


@value
class GenerationStats:
    prompt_tokens: int
    completion_tokens: int
    #: seconds between submission and the start of work on this request
    queue_seconds: float
    #: seconds from the start of work to the first sampled token (prompt processing)
    prefill_seconds: float
    #: seconds from the first sampled token to the end of generation
    decode_seconds: float

    @property
    def decode_tokens_per_second(self) -> float:
        decoded = self.completion_tokens - 1
        if decoded <= 0 or self.decode_seconds <= 0:
            return 0.0
        return decoded / self.decode_seconds


@value
class GenerationDone:
    """Last event of every generation."""

    finish_reason: FinishReason
    #: text still held back when generation ended (released at the end)
    text: str
    stats: GenerationStats


@value
class GenerationResult:
    text: str
    tokens: tuple[TokenLogprob, ...]
    finish_reason: FinishReason
    stats: GenerationStats


@dataclass(frozen=True)
class ModelInfo:
    name: str
    path: str
    n_ctx: int
    n_vocab: int


@value
class EngineStatus:
    loaded: bool
    running: int
    waiting: int
    max_waiting: int
    #: recent decode speed (exponentially weighted), 0 until measured
    tokens_per_second: float
    #: recent time a request keeps the model busy (exponentially weighted), 0 until measured
    seconds_per_request: float = 0.0
    #: the engine's own estimate of the work ahead of a new request (seconds), from each
    #: queued request's size; None = estimate from seconds_per_request alone
    backlog_seconds: float | None = None

    @property
    def estimated_wait_seconds(self) -> float:
        """How long a request submitted now would wait before the model starts on it."""
        if self.backlog_seconds is not None:
            return self.backlog_seconds
        return (self.running + self.waiting) * self.seconds_per_request

    @property
    def saturated(self) -> bool:
        """A new request would be refused."""
        return self.running + self.waiting > self.max_waiting
