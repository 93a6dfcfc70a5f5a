from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.fakes import FakeEngine


def _chat(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "model": "hybrid",
        "messages": [{"role": "user", "content": "Say hello"}],
    }
    body.update(overrides)
    return body


def test_chat_completion_returns_openai_shape(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue(["Hi", " there", "!"])
    response = client.post("/v1/chat/completions", json=_chat())
    assert response.status_code == 200
    body = response.json()
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    assert body["model"] == "hybrid"
    choice = body["choices"][0]
    assert choice["message"] == {"role": "assistant", "content": "Hi there!"}
    assert choice["finish_reason"] == "stop"
    assert choice["logprobs"] is None
    prompt_tokens = len(engine.history[0].prompt_tokens)
    assert body["usage"] == {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": 3,
        "total_tokens": prompt_tokens + 3,
    }
    assert response.headers["x-hybrid-route"] == "local"
    # default policy, no cloud: the gate still judges (confident here, so not degraded)
    assert body["hybrid"] == {
        "route": "local",
        "reason": "default",
        "confidence": -0.5,
        "threshold": -3.0,
    }
    assert response.headers["x-hybrid-confidence"] == "-0.5000"


def test_sampling_fields_reach_the_engine(client: TestClient, engine: FakeEngine) -> None:
    client.post(
        "/v1/chat/completions",
        json=_chat(temperature=0, top_p=0.5, seed=7, max_tokens=9, stop="END", top_k=3),
    )
    request = engine.history[0]
    assert request.max_tokens == 9
    assert request.stop == ("END",)
    assert request.sampling.temperature == 0
    assert request.sampling.top_p == 0.5
    assert request.sampling.top_k == 3
    assert request.sampling.seed == 7


def test_max_completion_tokens_wins_over_max_tokens(client: TestClient, engine: FakeEngine):
    client.post("/v1/chat/completions", json=_chat(max_tokens=50, max_completion_tokens=5))
    assert engine.history[0].max_tokens == 5


def test_default_max_tokens_is_capped_by_the_context(engine: FakeEngine, settings) -> None:
    # 256-token context: the default of 512 must shrink to what fits.
    from gateway import create_app

    with TestClient(create_app(settings, engine_factory=lambda _: engine)) as client:
        client.post("/v1/chat/completions", json=_chat())
    prompt = len(engine.history[0].prompt_tokens)
    assert engine.history[0].max_tokens == 256 - prompt


def test_length_finish_reason(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue(["a", "b", "c", "d"])
    body = client.post("/v1/chat/completions", json=_chat(max_tokens=2)).json()
    assert body["choices"][0]["message"]["content"] == "ab"
    assert body["choices"][0]["finish_reason"] == "length"


def test_stop_string_spanning_tokens_is_cut(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue(["one ", "two", " EN", "D three"])
    body = client.post("/v1/chat/completions", json=_chat(stop=["END"])).json()
    assert body["choices"][0]["message"]["content"] == "one two "
    assert body["choices"][0]["finish_reason"] == "stop"


def test_logprobs_in_openai_shape(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue(["Yes", "."], logprobs=[-0.25, -1.5])
    body = client.post("/v1/chat/completions", json=_chat(logprobs=True, top_logprobs=0)).json()
    content = body["choices"][0]["logprobs"]["content"]
    assert [c["token"] for c in content] == ["Yes", "."]
    assert [c["logprob"] for c in content] == [-0.25, -1.5]
    assert content[0]["bytes"] == list(b"Yes")
    assert content[0]["top_logprobs"] == []


def test_developer_role_is_rendered_as_system(client: TestClient, engine: FakeEngine) -> None:
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Hi"}]},
    ]
    assert client.post("/v1/chat/completions", json=_chat(messages=messages)).status_code == 200


def _sse_payloads(text: str) -> list[str]:
    events = [e for e in text.split("\n\n") if e]
    assert all(e.startswith("data: ") for e in events), events
    return [e[len("data: ") :] for e in events]


def test_streaming_chunks_and_done(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue(["Hel", "lo"])
    with client.stream(
        "POST",
        "/v1/chat/completions",
        json=_chat(stream=True, stream_options={"include_usage": True}),
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        payloads = _sse_payloads(response.read().decode())
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert text == "Hello"
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finals] == ["stop"]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == 2
    assert all(c["usage"] is None for c in chunks[:-1])


def test_streaming_without_usage_has_no_usage_key(client: TestClient, engine: FakeEngine):
    engine.enqueue(["x"])
    with client.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as response:
        payloads = _sse_payloads(response.read().decode())
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all("usage" not in c for c in chunks)


def test_streaming_holds_back_partial_stop_string(client: TestClient, engine: FakeEngine):
    engine.enqueue(["ab", "<", "/s", "> tail"])
    with client.stream(
        "POST", "/v1/chat/completions", json=_chat(stream=True, stop=["</s>"])
    ) as response:
        payloads = _sse_payloads(response.read().decode())
    deltas = [json.loads(p)["choices"][0]["delta"].get("content", "") for p in payloads[:-1]]
    assert "".join(deltas) == "ab"
    assert not any("<" in d for d in deltas)


def test_engine_failure_after_first_byte_is_an_sse_error_event(
    client: TestClient, engine: FakeEngine
) -> None:
    engine.enqueue(["one", "two", "three"], fail_after=1)
    with client.stream("POST", "/v1/chat/completions", json=_chat(stream=True)) as response:
        assert response.status_code == 200
        payloads = _sse_payloads(response.read().decode())
    assert payloads[-1] != "[DONE]"
    last = json.loads(payloads[-1])
    assert last["error"]["type"] == "server_error"
    assert "fake engine failure" not in last["error"]["message"]  # no internals leak
    contents = [json.loads(p)["choices"][0]["delta"].get("content") for p in payloads[:-1]]
    assert "one" in contents


def test_engine_failure_without_stream_is_a_500_error_body(
    client: TestClient, engine: FakeEngine
) -> None:
    engine.enqueue(["one", "two"], fail_after=0)
    response = client.post("/v1/chat/completions", json=_chat())
    assert response.status_code == 500
    assert response.json()["error"]["type"] == "server_error"
    # the gateway keeps serving
    assert client.post("/v1/chat/completions", json=_chat()).status_code == 200


def test_fast_text_chunks_equal_the_generic_ones() -> None:
    from gateway.openai_format import ChunkWriter, ResponseMeta
    from local_model import TokenLogprob

    token = TokenLogprob(5, 'a"b\\\n€', 'a"b\\\n€'.encode(), -0.5)
    for kind in ("chat", "text"):
        for include_usage in (False, True):
            meta = ResponseMeta.new(kind, "m", logprobs=False)
            writer = ChunkWriter(meta, include_usage=include_usage)
            fast = writer.delta_event(token.text, (token,))
            assert fast is not None and fast.startswith(b"data: ") and fast.endswith(b"\n\n")
            assert json.loads(fast[6:]) == writer.delta(token.text, (token,))
