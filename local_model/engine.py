"""The engine interface the gateway talks to, and its llama-cpp-python implementation."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from local_model.chat_template import ChatTemplate
from local_model.errors import EngineClosedError, GenerationFailedError, QueueFullError
from local_model.generation import Generation
from local_model.logprobs import (
    log_normalizer,
    log_normalizer_and_entropy,
    token_logprob,
    top_logprobs,
)
from local_model.text import StopMatcher, Utf8Assembler
from local_model.types import (
    ChatMessage,
    EngineStatus,
    FinishReason,
    GenerationDone,
    GenerationRequest,
    GenerationStats,
    ModelInfo,
    TokenEvent,
    TokenLogprob,
    TopLogprob,
)

logger = logging.getLogger(__name__)

# Weight of the newest sample in the running averages used for load estimates.
_EWMA_WEIGHT = 0.3


class Tokenizer(Protocol):
    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        """The prompt the model sees for a conversation (ValueError if the template
        refuses it). Every token of it covers at least one of its UTF-8 bytes."""
        ...

    def tokenize_rendered(self, prompt: str) -> list[int]:
        """A rendered chat prompt's tokens (special-token spellings are special tokens)."""
        ...

    def tokenize_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        """``tokenize_rendered(render_chat(messages))``."""
        ...

    def tokenize(self, text: str) -> list[int]:
        """Raw text's tokens, with the model's BOS (at most 2 more than its UTF-8 bytes)."""
        ...


class Engine(Protocol):
    """One local model: tokenizes, and runs generations one at a time."""

    @property
    def info(self) -> ModelInfo: ...

    @property
    def tokenizer(self) -> Tokenizer: ...

    def submit(self, request: GenerationRequest) -> Generation:
        """Queue a generation; raises QueueFullError or EngineClosedError at once."""
        ...

    def status(self) -> EngineStatus: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class EngineConfig:
    model_path: Path
    n_ctx: int = 4096
    n_threads: int = 2
    n_threads_batch: int = 2
    n_batch: int = 512
    max_waiting: int = 16
    #: reuse the KV cache of the previous prompt's common prefix (seeded requests never do)
    prefix_cache: bool = True
    #: seconds between deliveries of streamed tokens to the event loop (0 = every token)
    stream_interval: float = 0.0
    #: time a short generation at load, so the first burst's wait estimate has speeds
    warm_up: bool = True


class _LlamaTokenizer:
    """llama.cpp's tokenizer, called directly.

    ``Llama.tokenize`` allocates and zeroes a token buffer as long as the
    model's training context (8,192 ids for SmolLM2) on every call: 150 us
    against 127 us here for a short chat prompt, with a buffer sized to the
    text. The rest is llama.cpp's own tokenizer (about 0.3-1 us per byte).
    """

    def __init__(self, llama: Any, template: ChatTemplate) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._vocab = llama._model.vocab
        self._template = template

    def render_chat(self, messages: Sequence[ChatMessage]) -> str:
        return self._template.render(messages)

    def tokenize_rendered(self, prompt: str) -> list[int]:
        # The template writes any BOS it wants itself; special tokens such as
        # <|im_start|> must be parsed as tokens, not as text.
        return self._tokenize(prompt.encode("utf-8"), add_special=False, parse_special=True)

    def tokenize_chat(self, messages: Sequence[ChatMessage]) -> list[int]:
        return self.tokenize_rendered(self.render_chat(messages))

    def tokenize(self, text: str) -> list[int]:
        # Raw completions: user text never gets to spell special tokens.
        return self._tokenize(text.encode("utf-8"), add_special=True, parse_special=False)

    def _tokenize(self, data: bytes, *, add_special: bool, parse_special: bool) -> list[int]:
        llama_cpp = self._llama_cpp
        # Every token covers at least one byte; add_special adds at most BOS and EOS.
        capacity = len(data) + 2
        for _ in range(2):
            buffer = (llama_cpp.llama_token * capacity)()
            count: int = llama_cpp.llama_tokenize(
                self._vocab, data, len(data), buffer, capacity, add_special, parse_special
            )
            if count >= 0:
                tokens: list[int] = buffer[:count]
                return tokens
            capacity = -count  # too small after all: llama.cpp says how many it needs
        raise RuntimeError(f"llama.cpp could not tokenize a {len(data)}-byte text")


class LlamaEngine:
    """Owns one ``llama_cpp.Llama`` and a single worker thread.

    Generations run one at a time on that thread, in submission order; at most
    ``max_waiting`` more may wait. Per-token log-probabilities are read from the
    last row of logits that llama.cpp keeps even with ``logits_all=False``.
    """

    def __init__(self, config: EngineConfig) -> None:
        import llama_cpp

        self._llama_cpp = llama_cpp
        self._config = config
        # llama_cpp's annotations are partial; treat the handle as untyped.
        self._llama: Any = llama_cpp.Llama(
            model_path=str(config.model_path),
            n_ctx=config.n_ctx,
            n_threads=config.n_threads,
            n_threads_batch=config.n_threads_batch,
            n_batch=config.n_batch,
            logits_all=False,
            verbose=False,
        )
        llama = self._llama
        metadata: dict[str, str] = dict(llama.metadata)
        bos_id, eos_id = llama.token_bos(), llama.token_eos()
        template = ChatTemplate(
            metadata.get("tokenizer.chat_template"),
            bos_token=llama._model.token_get_text(bos_id) if bos_id >= 0 else "",
            eos_token=llama._model.token_get_text(eos_id) if eos_id >= 0 else "",
        )
        self._tokenizer = _LlamaTokenizer(llama, template)
        self._info = ModelInfo(
            name=metadata.get("general.name", config.model_path.stem),
            path=str(config.model_path),
            n_ctx=llama.n_ctx(),
            n_vocab=llama.n_vocab(),
        )
        # Worker-thread-only state: two scratch rows for log-sum-exp and entropy, and
        # token pieces (the vocabulary never changes, detokenizing is a C call each).
        self._shifted = np.empty(self._info.n_vocab, dtype=np.float32)
        self._weights = np.empty(self._info.n_vocab, dtype=np.float32)
        self._pieces: dict[int, bytes] = {}
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-model")
        self._running = 0
        self._waiting = 0
        self._closed = False
        self._tokens_per_second = 0.0
        self._seconds_per_request = 0.0
        # The wait estimate (event-loop state): the expected seconds of every waiting
        # request, and of the running one with when it started.
        self._prefill_per_second = 0.0
        self._completion_tokens = 0.0
        self._expected: dict[int, float] = {}
        self._running_expected = (0.0, 0.0)
        if config.warm_up:
            # On the worker thread, where every later generation runs: a first decode on
            # another thread left llama.cpp decoding at half speed for good (63 vs 131
            # tok/s here, bench/local_path.py).
            try:
                self._executor.submit(self._warm_up).result()
            except Exception as exc:  # the model still serves; only the first estimate waits
                logger.warning(
                    "warm-up generation failed (%s): no wait estimate until a request ends", exc
                )

    @property
    def info(self) -> ModelInfo:
        return self._info

    @property
    def tokenizer(self) -> Tokenizer:
        return self._tokenizer

    def status(self) -> EngineStatus:
        return EngineStatus(
            loaded=not self._closed,
            running=self._running,
            waiting=self._waiting,
            max_waiting=self._config.max_waiting,
            tokens_per_second=self._tokens_per_second,
            seconds_per_request=self._seconds_per_request,
            backlog_seconds=self._backlog_seconds() if self._tokens_per_second > 0 else None,
        )

    def submit(self, request: GenerationRequest) -> Generation:
        if self._closed:
            raise EngineClosedError("the local model is shutting down")
        busy = self._running + self._waiting
        if busy > self._config.max_waiting:
            retry_after = max(1.0, self.status().estimated_wait_seconds)
            raise QueueFullError(
                f"the local model queue is full ({self._waiting} waiting)",
                retry_after_seconds=retry_after,
            )
        loop = asyncio.get_running_loop()
        generation = Generation(loop, wake_interval=self._config.stream_interval)
        self._waiting += 1
        self._expected[id(generation)] = self._expected_seconds(request)
        submitted = time.perf_counter()
        self._executor.submit(self._run, request, generation, submitted, loop)
        return generation

    def _expected_seconds(self, request: GenerationRequest) -> float:
        """How long this request should keep the model busy, at the measured speeds.

        The completion is expected to be as long as recent ones were, capped by its
        ``max_tokens``; before any completion is seen, ``max_tokens`` itself (the
        cautious guess: a load rule would rather offload too early than too late).
        """
        if self._tokens_per_second <= 0:
            return 0.0
        typical = self._completion_tokens or float(request.max_tokens)
        completion = min(float(request.max_tokens), typical)
        prefill = (
            len(request.prompt_tokens) / self._prefill_per_second
            if self._prefill_per_second > 0
            else 0.0
        )
        return prefill + completion / self._tokens_per_second

    def _backlog_seconds(self) -> float:
        expected, started = self._running_expected
        running = max(0.0, expected - (time.perf_counter() - started)) if self._running else 0.0
        return running + sum(self._expected.values())

    def _warm_up(self) -> None:
        """A short greedy generation: pages the weights in and measures both speeds."""
        llama = self._llama
        prompt = llama.tokenize(b"The weather today is", add_bos=True, special=False)
        started = time.perf_counter()
        first: float | None = None
        count = 0
        tokens = llama.generate(prompt, temp=0.0)
        try:
            for _ in tokens:
                if first is None:
                    first = time.perf_counter()
                count += 1
                if count == 9:
                    break
        finally:
            tokens.close()
        ended = time.perf_counter()
        llama.reset()
        if first is not None and count > 1 and ended > first > started:
            self._prefill_per_second = len(prompt) / (first - started)
            self._tokens_per_second = (count - 1) / (ended - first)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=False)
        self._llama.close()

    # --- worker thread -------------------------------------------------

    def _run(
        self,
        request: GenerationRequest,
        generation: Generation,
        submitted: float,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        loop.call_soon_threadsafe(self._started, id(generation))
        try:
            done = self._generate(request, generation, submitted)
        except Exception as exc:
            logger.error("local generation failed", exc_info=exc)
            failure = GenerationFailedError(f"local generation failed: {exc}")
            failure.__cause__ = exc
            generation.fail(failure)
            return
        finally:
            loop.call_soon_threadsafe(self._finished)
        generation.publish(done)
        loop.call_soon_threadsafe(self._record, done.stats)

    def _generate(
        self, request: GenerationRequest, generation: Generation, submitted: float
    ) -> GenerationDone:
        started = time.perf_counter()
        queue_seconds = started - submitted
        if generation.cancelled:
            return GenerationDone("cancelled", "", self._stats(request, 0, queue_seconds, 0, 0))

        llama, llama_cpp = self._llama, self._llama_cpp
        sampling = request.sampling
        if sampling.seed is None:
            llama.set_seed(random.getrandbits(31))
        else:
            llama.set_seed(sampling.seed & 0xFFFFFFFF)
        if sampling.seed is not None or not self._config.prefix_cache:
            # Reusing the KV prefix of the previous prompt re-decodes its last
            # token alone, which rounds differently from the batched first
            # evaluation; a seed promises identical output, so start afresh.
            llama.reset()
        vocab = llama._model.vocab
        n_vocab = self._info.n_vocab
        shifted, weights = self._shifted, self._weights
        utf8 = Utf8Assembler()
        stops = StopMatcher(request.stop)
        completion_tokens = 0
        first_token_at: float | None = None
        finish: FinishReason = "length"
        stops_matched = False

        tokens = llama.generate(
            request.prompt_tokens,
            temp=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k,
            min_p=sampling.min_p,
            repeat_penalty=sampling.repeat_penalty,
            frequency_penalty=sampling.frequency_penalty,
            presence_penalty=sampling.presence_penalty,
        )
        try:
            for token_id in tokens:
                if first_token_at is None:
                    first_token_at = time.perf_counter()
                if generation.cancelled:
                    finish = "cancelled"
                    break
                if llama_cpp.llama_vocab_is_eog(vocab, token_id):
                    finish = "stop"
                    break
                # The logits that produced this token are still the last row
                # of the context's output buffer: no logits_all needed.
                row = np.ctypeslib.as_array(
                    llama_cpp.llama_get_logits_ith(llama.ctx, -1), shape=(n_vocab,)
                )
                entropy: float | None = None
                if request.entropies:
                    normalizer, entropy = log_normalizer_and_entropy(row, shifted, weights)
                else:
                    normalizer = log_normalizer(row, weights)
                piece = self._piece(token_id)
                text = utf8.feed(piece)
                released, stopped = stops.feed(text)
                top: tuple[TopLogprob, ...] = ()
                if request.top_logprobs:
                    top = tuple(
                        TopLogprob(i, self._piece_text(i), lp)
                        for i, lp in top_logprobs(row, request.top_logprobs, normalizer)
                    )
                completion_tokens += 1
                logprob = token_logprob(row, token_id, normalizer)
                generation.publish(
                    TokenEvent(
                        released,
                        TokenLogprob(token_id, text, piece, logprob, top, entropy),
                    )
                )
                if stopped:
                    finish = "stop"
                    stops_matched = True
                    break
                if completion_tokens >= request.max_tokens:
                    break
        finally:
            tokens.close()

        ended = time.perf_counter()
        tail = ""
        if not stops_matched:
            released, _ = stops.feed(utf8.flush())
            tail = released + stops.flush()
        first = first_token_at if first_token_at is not None else ended
        return GenerationDone(
            finish,
            tail,
            self._stats(request, completion_tokens, queue_seconds, first - started, ended - first),
        )

    def _piece(self, token_id: int) -> bytes:
        piece = self._pieces.get(token_id)
        if piece is None:
            piece = bytes(self._llama.detokenize([token_id]))
            self._pieces[token_id] = piece
        return piece

    def _piece_text(self, token_id: int) -> str:
        return self._piece(token_id).decode("utf-8", errors="replace")

    @staticmethod
    def _stats(
        request: GenerationRequest,
        completion_tokens: int,
        queue_seconds: float,
        prefill_seconds: float,
        decode_seconds: float,
    ) -> GenerationStats:
        return GenerationStats(
            prompt_tokens=len(request.prompt_tokens),
            completion_tokens=completion_tokens,
            queue_seconds=queue_seconds,
            prefill_seconds=prefill_seconds,
            decode_seconds=decode_seconds,
        )

    # --- bookkeeping on the event loop ------------------------------------

    def _started(self, key: int) -> None:
        self._waiting -= 1
        self._running += 1
        self._running_expected = (self._expected.pop(key, 0.0), time.perf_counter())

    def _finished(self) -> None:
        self._running -= 1

    def _record(self, stats: GenerationStats) -> None:
        speed = stats.decode_tokens_per_second
        if speed > 0:
            self._tokens_per_second = _ewma(self._tokens_per_second, speed)
        if stats.prompt_tokens > 0 and stats.prefill_seconds > 0:
            prefill = stats.prompt_tokens / stats.prefill_seconds
            self._prefill_per_second = _ewma(self._prefill_per_second, prefill)
        if stats.completion_tokens > 0:
            self._completion_tokens = _ewma(self._completion_tokens, stats.completion_tokens)
        seconds = stats.prefill_seconds + stats.decode_seconds
        if seconds > 0:
            self._seconds_per_request = _ewma(self._seconds_per_request, seconds)


def _ewma(previous: float, sample: float) -> float:
    if previous <= 0:
        return sample
    return (1 - _EWMA_WEIGHT) * previous + _EWMA_WEIGHT * sample
