"""The real engine on the real bundled GGUF."""

from __future__ import annotations

import asyncio
import threading

import numpy as np
import pytest
from llama_cpp import Llama

from local_model import (
    ChatMessage,
    GenerationDone,
    GenerationRequest,
    QueueFullError,
    SamplingParams,
)
from local_model.engine import EngineConfig, LlamaEngine

pytestmark = pytest.mark.model

GREEDY = SamplingParams(temperature=0)
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"


def _chat(engine: LlamaEngine, text: str) -> tuple[int, ...]:
    return tuple(engine.tokenizer.tokenize_chat([ChatMessage("user", text)]))


async def test_generates_real_tokens(llama_engine: LlamaEngine) -> None:
    # Guards against the AMX crash: a broken build dies right here.
    prompt = _chat(llama_engine, "Name a colour.")
    result = await llama_engine.submit(GenerationRequest(prompt, 12, GREEDY)).result()
    assert result.text.strip()
    assert 1 <= result.stats.completion_tokens <= 12
    assert len(result.tokens) == result.stats.completion_tokens
    assert result.stats.prompt_tokens == len(prompt)
    assert all(t.logprob <= 0 for t in result.tokens)
    assert result.finish_reason in ("stop", "length")


async def test_chat_template_comes_from_the_gguf(llama_engine: LlamaEngine) -> None:
    prompt = _chat(llama_engine, "hi")
    text = llama_engine._llama.detokenize(list(prompt), special=True).decode()
    # SmolLM2's template is ChatML with a default system prompt.
    assert text.startswith("<|im_start|>system\n")
    assert text.endswith("<|im_start|>assistant\n")


async def test_logprobs_equal_llama_cpp_logits_all_path(
    llama_engine: LlamaEngine, model_path
) -> None:
    """The cheap last-row log-sum-exp and entropy give what logits_all=True would give."""
    prompt = llama_engine.tokenizer.tokenize(COUNTING)
    request = GenerationRequest(tuple(prompt), 8, GREEDY, top_logprobs=3, entropies=True)
    result = await llama_engine.submit(request).result()
    assert result.stats.completion_tokens == 8
    # Entropies only when asked for (they cost a pass over the vocabulary per token);
    # the log-probabilities are the same either way.
    plain = await llama_engine.submit(GenerationRequest(tuple(prompt), 8, GREEDY)).result()
    assert [t.entropy for t in plain.tokens] == [None] * 8
    assert [t.logprob for t in plain.tokens] == pytest.approx(
        [t.logprob for t in result.tokens], abs=1e-6
    )

    slow = Llama(str(model_path), n_ctx=256, logits_all=True, verbose=False)
    try:
        # Same evaluation order as generation (prompt batch, then one token
        # at a time): batched and single-token kernels round differently.
        slow.eval(prompt)
        for token in result.tokens[:-1]:
            slow.eval([token.token_id])
        scores = np.asarray(slow.scores[: slow.n_tokens], dtype=np.float64)
    finally:
        slow.close()
    for i, token in enumerate(result.tokens):
        row = scores[len(prompt) - 1 + i]
        reference = row - (row.max() + np.log(np.exp(row - row.max()).sum()))
        assert token.logprob == pytest.approx(reference[token.token_id], abs=2e-3)
        # the entropy of the same distribution, over the whole vocabulary
        entropy = -float((np.exp(reference) * reference).sum())
        assert token.entropy == pytest.approx(entropy, abs=2e-3)
        # greedy: the sampled token is the most likely one
        assert token.top[0].token_id == token.token_id
        best = np.argsort(reference)[::-1][:3]
        assert [a.token_id for a in token.top] == list(best)


async def test_same_seed_same_text(llama_engine: LlamaEngine) -> None:
    prompt = _chat(llama_engine, "Write a short poem about rain.")
    sampling = SamplingParams(temperature=1.0, seed=1234)
    first = await llama_engine.submit(GenerationRequest(prompt, 24, sampling)).result()
    second = await llama_engine.submit(GenerationRequest(prompt, 24, sampling)).result()
    other = SamplingParams(temperature=1.0, seed=99)
    third = await llama_engine.submit(GenerationRequest(prompt, 24, other)).result()
    assert first.text == second.text
    assert [t.token_id for t in first.tokens] != [t.token_id for t in third.tokens]


async def test_stop_string_ends_generation(llama_engine: LlamaEngine) -> None:
    prompt = tuple(llama_engine.tokenizer.tokenize(COUNTING))
    result = await llama_engine.submit(GenerationRequest(prompt, 40, GREEDY, stop=("12",))).result()
    assert result.finish_reason == "stop"
    assert "12" not in result.text
    assert "11" in result.text


async def test_leaving_the_stream_stops_generation(llama_engine: LlamaEngine) -> None:
    prompt = tuple(llama_engine.tokenizer.tokenize(COUNTING))
    generation = llama_engine.submit(GenerationRequest(prompt, 1500, GREEDY))
    seen = 0
    async for event in generation.events():
        assert not isinstance(event, GenerationDone)
        seen += 1
        if seen == 3:
            break
    done = await generation.finished()
    assert done.finish_reason == "cancelled"
    # Stops within a token or two of the consumer leaving.
    assert done.stats.completion_tokens <= seen + 2


async def test_full_queue_refuses_at_once(llama_engine: LlamaEngine) -> None:
    prompt = tuple(llama_engine.tokenizer.tokenize(COUNTING))
    running = llama_engine.submit(GenerationRequest(prompt, 1500, GREEDY))
    waiting = [llama_engine.submit(GenerationRequest(prompt, 4, GREEDY)) for _ in range(2)]
    with pytest.raises(QueueFullError) as refused:
        llama_engine.submit(GenerationRequest(prompt, 4, GREEDY))
    assert refused.value.retry_after_seconds >= 1
    running.cancel()
    assert (await running.finished()).finish_reason == "cancelled"
    for generation in waiting:
        result = await generation.result()
        assert result.stats.completion_tokens == 4
    status = llama_engine.status()
    assert (status.running, status.waiting) == (0, 0)
    assert status.tokens_per_second > 0


async def test_wait_estimate_has_speeds_before_the_first_request(model_path) -> None:
    """A cold burst must see a wait: the load rule offloads on it (latency-first)."""
    engine = LlamaEngine(EngineConfig(model_path=model_path, n_ctx=512, max_waiting=4))
    try:
        idle = engine.status()
        assert idle.tokens_per_second > 0  # measured by the warm-up, no request yet
        assert idle.estimated_wait_seconds == 0
        prompt = tuple(engine.tokenizer.tokenize(COUNTING))
        long = engine.submit(GenerationRequest(prompt, 400, GREEDY))
        after_long = engine.status().estimated_wait_seconds
        # Nothing has finished: the request's own max_tokens is the expected length.
        assert after_long >= 400 / idle.tokens_per_second
        short = engine.submit(GenerationRequest(prompt, 4, GREEDY))
        after_short = engine.status().estimated_wait_seconds
        assert after_long < after_short < after_long + 400 / idle.tokens_per_second
        long.cancel()
        await long.finished()
        await short.result()
        settled = engine.status()
        assert (settled.running, settled.waiting) == (0, 0)
        assert settled.estimated_wait_seconds == 0
    finally:
        await engine.aclose()


async def test_engine_without_warm_up_estimates_nothing_until_measured(model_path) -> None:
    engine = LlamaEngine(EngineConfig(model_path=model_path, n_ctx=256, warm_up=False))
    try:
        assert engine.status().tokens_per_second == 0
        prompt = tuple(engine.tokenizer.tokenize(COUNTING))
        generation = engine.submit(GenerationRequest(prompt, 400, GREEDY))
        assert engine.status().estimated_wait_seconds == 0  # no speed known yet
        generation.cancel()
        await generation.finished()
    finally:
        await engine.aclose()


def test_warm_up_runs_on_the_generation_thread(model_path) -> None:
    """llama.cpp's CPU threads belong to the thread that first decodes: a warm-up on any
    other thread left every later generation at half speed (bench/local_path.py, 0.65)."""
    seen: list[str] = []

    class Spy(LlamaEngine):
        def _warm_up(self) -> None:
            seen.append(threading.current_thread().name)
            super()._warm_up()

    engine = Spy(EngineConfig(model_path=model_path, n_ctx=256))
    try:
        assert len(seen) == 1 and seen[0].startswith("local-model"), seen
        assert engine.status().tokens_per_second > 0
    finally:
        asyncio.run(engine.aclose())


def test_a_failed_warm_up_leaves_the_engine_serving(model_path, caplog) -> None:
    class Broken(LlamaEngine):
        def _warm_up(self) -> None:
            raise RuntimeError("no tokens today")

    engine = Broken(EngineConfig(model_path=model_path, n_ctx=256))
    try:
        assert "warm-up generation failed (no tokens today)" in caplog.text
        assert engine.status().tokens_per_second == 0  # no estimate until a request ends

        async def one() -> int:
            prompt = tuple(engine.tokenizer.tokenize(COUNTING))
            done = await engine.submit(GenerationRequest(prompt, 3, GREEDY)).result()
            return done.stats.completion_tokens

        assert asyncio.run(one()) == 3
    finally:
        asyncio.run(engine.aclose())
