"""The real gateway (uvicorn, real GGUF) driven by the official OpenAI SDK and raw HTTP."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator

import httpx
import openai
import pytest

from local_model import GenerationDone
from tests.integration.conftest import LiveGateway

pytestmark = pytest.mark.model

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def client(live_gateway: LiveGateway) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{live_gateway.url}/v1", api_key="unused", max_retries=0) as sdk:
        yield sdk


def _wait_idle(gateway: LiveGateway) -> None:
    deadline = time.monotonic() + 60
    while True:
        status = gateway.engine.status()
        if status.running == 0 and status.waiting == 0:
            return
        assert time.monotonic() < deadline, "engine never went idle"
        time.sleep(0.02)


def test_chat_completion_with_the_sdk(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="hybrid",
        messages=QUESTION,
        max_tokens=16,
        temperature=0,
        extra_headers={"x-request-id": "sdk-test-1"},
    )
    assert raw.headers["x-request-id"] == "sdk-test-1"
    assert raw.headers["x-hybrid-route"] == "local"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == "hybrid"
    message = completion.choices[0].message
    assert message.role == "assistant"
    assert message.content and message.content.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    usage = completion.usage
    assert usage is not None
    assert 0 < usage.completion_tokens <= 16
    assert usage.prompt_tokens > 10
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_stream_equals_non_stream_for_the_same_seed(client: openai.OpenAI) -> None:
    kwargs = dict(model="local", messages=QUESTION, max_tokens=24, temperature=0.9, seed=7)
    whole = client.chat.completions.create(**kwargs)  # type: ignore[call-overload]
    chunks = list(
        client.chat.completions.create(  # type: ignore[call-overload]
            stream=True, stream_options={"include_usage": True}, **kwargs
        )
    )
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == whole.choices[0].message.content
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert reasons[-1] == whole.choices[0].finish_reason
    assert all(r is None for r in reasons[:-1])


def test_text_completions_with_the_sdk(client: openai.OpenAI) -> None:
    whole = client.completions.create(model="local", prompt=COUNTING, max_tokens=6, temperature=0)
    assert whole.object == "text_completion"
    assert "9" in whole.choices[0].text
    assert whole.usage is not None and whole.usage.completion_tokens == 6
    streamed = "".join(
        c.choices[0].text
        for c in client.completions.create(
            model="local", prompt=COUNTING, max_tokens=6, temperature=0, stream=True
        )
        if c.choices
    )
    assert streamed == whole.choices[0].text


def test_logprobs_with_the_sdk(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="hybrid",
        messages=QUESTION,
        max_tokens=5,
        temperature=0,
        logprobs=True,
        top_logprobs=3,
    )
    choice = completion.choices[0]
    assert choice.logprobs is not None and choice.logprobs.content
    text = "".join(entry.token for entry in choice.logprobs.content)
    assert text == choice.message.content
    for entry in choice.logprobs.content:
        assert entry.logprob <= 0
        alternatives = [alt.logprob for alt in entry.top_logprobs]
        assert len(alternatives) == 3
        assert alternatives == sorted(alternatives, reverse=True)
        # greedy decoding picked the most likely token
        assert entry.top_logprobs[0].token == entry.token


def test_models_with_the_sdk(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["hybrid", "local"]


def test_unknown_model_error_with_the_sdk(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-unknown", messages=QUESTION)
    assert caught.value.code == "model_not_found"


def test_prompt_over_the_context_window(client: openai.OpenAI) -> None:
    long_prompt = [{"role": "user", "content": "word " * 3000}]
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="hybrid", messages=long_prompt)
    assert caught.value.code == "context_length_exceeded"
    assert "2048" in caught.value.message


def test_raw_sse_framing_and_incremental_delivery(live_gateway: LiveGateway) -> None:
    _wait_idle(live_gateway)
    body = {
        "model": "local",
        "prompt": COUNTING,
        "max_tokens": 200,
        "temperature": 0,
        "stream": True,
    }
    with httpx.Client(base_url=live_gateway.url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            assert response.status_code == 200
            assert response.headers["content-type"].startswith("text/event-stream")
            assert response.headers["cache-control"] == "no-cache"
            buffer = b""
            saw_generation_running = False
            for data in response.iter_raw():
                if not buffer and b'"text":"' in data:
                    # The first token reached us while the model was still generating:
                    # the response is streamed, not buffered.
                    saw_generation_running = live_gateway.engine.status().running == 1
                buffer += data
    assert saw_generation_running
    events = buffer.split(b"\n\n")
    assert events[-1] == b""
    assert events[-2] == b"data: [DONE]"
    for event in events[:-2]:
        assert event.startswith(b"data: ")
        json.loads(event[len(b"data: ") :])


def test_client_leaving_a_stream_stops_generation(live_gateway: LiveGateway) -> None:
    _wait_idle(live_gateway)
    body = {
        "model": "local",
        "prompt": COUNTING,
        "max_tokens": 1500,
        "temperature": 0,
        "stream": True,
    }
    with httpx.Client(base_url=live_gateway.url, timeout=60) as http:
        with http.stream("POST", "/v1/completions", json=body) as response:
            for line in response.iter_lines():
                if line.startswith("data: {"):
                    break
    done = live_gateway.engine.generations[-1].wait_finished(timeout=60)
    assert isinstance(done, GenerationDone)
    assert done.finish_reason == "cancelled"
    assert done.stats.completion_tokens < 1500


def test_client_leaving_before_a_non_streamed_answer_stops_generation(
    live_gateway: LiveGateway,
) -> None:
    _wait_idle(live_gateway)
    payload = json.dumps(
        {"model": "local", "prompt": COUNTING, "max_tokens": 1500, "temperature": 0}
    ).encode()
    before = len(live_gateway.engine.generations)
    with socket.create_connection(("127.0.0.1", int(live_gateway.url.rsplit(":", 1)[1]))) as s:
        s.sendall(
            b"POST /v1/completions HTTP/1.1\r\nHost: test\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        deadline = time.monotonic() + 60
        while len(live_gateway.engine.generations) == before or (
            live_gateway.engine.status().running == 0
        ):
            assert time.monotonic() < deadline
            time.sleep(0.01)
    done = live_gateway.engine.generations[-1].wait_finished(timeout=60)
    assert isinstance(done, GenerationDone)
    assert done.finish_reason == "cancelled"
    assert done.stats.completion_tokens < 1500


def test_concurrent_requests_do_not_cross_talk(live_gateway: LiveGateway) -> None:
    """Seeded requests give the same text concurrently as one by one."""
    _wait_idle(live_gateway)
    prompts = ["Tell me about cats.", "What is rain?", "Name three fruits.", "Say hi."]

    async def one(client: openai.AsyncOpenAI, i: int) -> str:
        kwargs = dict(
            model="local",
            messages=[{"role": "user", "content": prompts[i]}],
            max_tokens=16,
            temperature=0.8,
            seed=100 + i,
        )
        if i % 2:
            parts = []
            async for chunk in await client.chat.completions.create(stream=True, **kwargs):
                if chunk.choices:
                    parts.append(chunk.choices[0].delta.content or "")
            return "".join(parts)
        completion = await client.chat.completions.create(**kwargs)
        return completion.choices[0].message.content or ""

    async def run(concurrently: bool) -> list[str]:
        async with openai.AsyncOpenAI(
            base_url=f"{live_gateway.url}/v1", api_key="unused", max_retries=0
        ) as client:
            if concurrently:
                return list(await asyncio.gather(*(one(client, i) for i in range(4))))
            return [await one(client, i) for i in range(4)]

    sequential = asyncio.run(run(False))
    concurrent = asyncio.run(run(True))
    assert concurrent == sequential
    assert len(set(sequential)) == 4
