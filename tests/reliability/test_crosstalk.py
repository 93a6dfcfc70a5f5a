"""No cross-talk inside the engine: seeded requests give the same output at once as alone.

Sampling at temperature > 0 makes any shared state visible (a sampler seeded by
the wrong request, a KV cache holding another prompt, tokens delivered to the
wrong stream). Each request runs alone, streamed and not; then all of them at
once, together with unseeded requests on the same prompts that keep reusing
and overwriting the engine's prefix cache. Every seeded output must be the same.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from tests.reliability.conftest import Results
from tests.reliability.harness import GatewayProcess
from tests.reliability.load import Answer, send_all

pytestmark = pytest.mark.model

CATS = [{"role": "user", "content": "Tell me something about cats."}]
SPECS: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"messages": CATS, "temperature": 1.2, "seed": 11}),
    # the same prompt with another seed must give another answer
    ("/v1/chat/completions", {"messages": CATS, "temperature": 1.2, "seed": 12}),
    (
        "/v1/chat/completions",
        {
            "messages": [
                {"role": "system", "content": "Answer in one sentence."},
                {"role": "user", "content": "Why is the sky blue?"},
            ],
            "temperature": 1.0,
            "top_p": 0.9,
            "seed": 13,
        },
    ),
    ("/v1/completions", {"prompt": "Once upon a time, in a city by the sea,", "seed": 14}),
    (
        "/v1/chat/completions",
        {
            "messages": [{"role": "user", "content": "Name three rivers."}],
            "temperature": 0.9,
            "seed": 15,
            "logprobs": True,
            "top_logprobs": 2,
        },
    ),
]
# Unseeded (a random seed each) and sharing prompts with the seeded ones.
NOISE: list[tuple[str, dict[str, Any]]] = [
    ("/v1/chat/completions", {"messages": CATS, "temperature": 1.0}),
    ("/v1/completions", {"prompt": "Once upon a time, in a city by the sea,"}),
    ("/v1/chat/completions", {"messages": CATS + [{"role": "assistant", "content": "Cats"}]}),
]
MAX_TOKENS = 16


def _request(path: str, fields: dict[str, Any], stream: bool) -> tuple[str, dict[str, Any]]:
    return path, {"model": "local", "max_tokens": MAX_TOKENS, "stream": stream, **fields}


def _logprobs(answer: Answer) -> list[tuple[str, float]]:
    assert answer.body is not None
    content = answer.body["choices"][0]["logprobs"]["content"]
    return [(entry["token"], entry["logprob"]) for entry in content]


def test_seeded_requests_give_the_same_output_concurrently(
    local_gateway: GatewayProcess, results: Results
) -> None:
    gateway = local_gateway
    gateway.wait_idle()
    requests = [_request(p, f, stream) for p, f in SPECS for stream in (False, True)]

    alone = [asyncio.run(send_all(gateway.url, [r]))[0] for r in requests]
    for answer in alone:
        assert answer.complete, answer.body
    noise = [_request(p, f, i % 2 == 0) for i, (p, f) in enumerate(NOISE)]
    together = asyncio.run(send_all(gateway.url, requests + noise))
    for answer in together:
        assert answer.complete, answer.body

    texts = [a.text for a in alone]
    # streamed and not, alone: the same text (pairs are adjacent)
    assert texts[0::2] == texts[1::2]
    assert len(set(texts[0::2])) == len(SPECS), "different seeds or prompts gave one answer"
    assert [a.text for a in together[: len(requests)]] == texts
    logprobs_alone = _logprobs(alone[-2])
    logprobs_together = _logprobs(together[len(requests) - 2])
    assert [t for t, _ in logprobs_together] == [t for t, _ in logprobs_alone]
    assert [lp for _, lp in logprobs_together] == pytest.approx([lp for _, lp in logprobs_alone])

    results.record(
        "no cross-talk",
        seeded_requests=len(requests),
        unseeded_alongside=len(NOISE),
        identical=sum(a.text == b for a, b in zip(together, texts, strict=False)),
        max_tokens=MAX_TOKENS,
    )
