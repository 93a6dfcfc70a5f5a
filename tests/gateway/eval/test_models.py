"""The eval's answerers: the local engine (FakeEngine) and the cloud (FakeCloud, and the
real cloud client against httpx.MockTransport)."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from gateway.cloud import CloudClient
from gateway.errors import UpstreamError
from gateway.eval.dataset import ChatTurn, EvalItem
from gateway.eval.models import CloudModel, LocalModel
from gateway.settings import CloudSettings
from local_model.types import SamplingParams
from tests.fakes import CloudReply, FakeCloud, FakeEngine

CHAT_ITEM = EvalItem(
    id="c1",
    answers=("Paris",),
    match="contains",
    messages=(ChatTurn("system", "Be brief."), ChatTurn("user", "Capital of France?")),
)
PROMPT_ITEM = EvalItem(id="p1", answers=("4",), match="number", prompt="2 + 2 =")
GREEDY = SamplingParams(temperature=0.0, top_p=0.9, top_k=40, min_p=0.05)


async def test_local_model_answers_greedily_and_loads_once() -> None:
    engine = FakeEngine()
    loads: list[int] = []

    def load() -> FakeEngine:
        loads.append(1)
        return engine

    model = LocalModel(load, max_tokens=7, sampling=GREEDY)  # type: ignore[arg-type]
    engine.enqueue(["Paris", "."], [-0.25, -1.5])
    answer = await model(CHAT_ITEM)
    assert answer.text == "Paris."
    assert answer.logprobs == (-0.25, -1.5)
    # FakeTokenizer: two tokens per message plus one per word.
    assert answer.prompt_tokens == (2 + 2) + (2 + 3)
    assert answer.seconds >= 0.0
    request = engine.history[0]
    assert request.max_tokens == 7
    assert request.sampling.temperature == 0.0

    engine.enqueue(["4"], [-0.1])
    answer = await model(PROMPT_ITEM)
    # A bare prompt is tokenized raw, without the two tokens chat framing adds.
    assert answer.prompt_tokens == 4
    assert loads == [1]
    await model.aclose()
    assert engine.closed


async def test_cloud_model_sends_the_same_generation_settings() -> None:
    cloud = FakeCloud()
    cloud.enqueue(CloudReply(pieces=("Paris", " it is")))
    model = CloudModel(cloud, max_tokens=32, top_p=0.9)
    answer = await model(CHAT_ITEM)
    assert answer.text == "Paris it is"
    assert (answer.prompt_tokens, answer.completion_tokens) == (11, 2)
    endpoint, payload = cloud.calls[0]
    assert endpoint == "chat"
    assert payload == {
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Capital of France?"},
        ],
        "max_tokens": 32,
        "temperature": 0.0,
        "top_p": 0.9,
    }
    await model(PROMPT_ITEM)
    endpoint, payload = cloud.calls[1]
    assert endpoint == "text"
    assert payload["prompt"] == "2 + 2 ="


async def test_cloud_model_through_the_real_client() -> None:
    seen: list[dict[str, Any]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append({"url": str(request.url), "body": json.loads(request.content)})
        return httpx.Response(
            200,
            json={
                "id": "x",
                "object": "chat.completion",
                "created": 1,
                "model": "upstream-model",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "Paris."},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 20, "completion_tokens": 3, "total_tokens": 23},
            },
        )

    settings = CloudSettings(base_url="https://cloud.test/v1", model="big-model", api_key="sk-x")
    client = CloudClient(settings, transport=httpx.MockTransport(handle))
    try:
        answer = await CloudModel(client, max_tokens=16, top_p=0.95)(CHAT_ITEM)
    finally:
        await client.aclose()
    assert answer.text == "Paris."
    assert (answer.prompt_tokens, answer.completion_tokens) == (20, 3)
    assert seen[0]["url"] == "https://cloud.test/v1/chat/completions"
    assert seen[0]["body"]["model"] == "big-model"
    assert seen[0]["body"]["temperature"] == 0.0
    assert seen[0]["body"]["stream"] is False


async def test_cloud_answer_without_a_choice_is_an_upstream_error() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json={"choices": []})

    settings = CloudSettings(base_url="https://cloud.test/v1")
    client = CloudClient(settings, transport=httpx.MockTransport(handle))
    try:
        with pytest.raises(UpstreamError, match="no first choice"):
            await CloudModel(client, max_tokens=16, top_p=0.95)(CHAT_ITEM)
    finally:
        await client.aclose()
