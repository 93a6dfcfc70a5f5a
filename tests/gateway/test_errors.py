from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.fakes import FakeEngine


def _assert_error(response, status: int, *, param: str | None = None, code: str | None = None):
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["message"]
    assert error["param"] == param
    if code is not None:
        assert error["code"] == code
    return error


def test_malformed_json_is_400(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions",
        content=b'{"model": "hybrid", "messages": [',
        headers={"content-type": "application/json"},
    )
    error = _assert_error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert "JSON" in error["message"]


def test_missing_messages_names_the_field(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={"model": "hybrid"})
    _assert_error(response, 400, param="messages")


def test_wrong_type_names_the_nested_field(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={
            "model": "hybrid",
            "messages": [{"role": "user", "content": "hi"}],
            "temperature": "hot",
        },
    )
    _assert_error(response, 400, param="temperature")


def test_unknown_role_names_the_message(client: TestClient) -> None:
    response = client.post(
        "/v1/chat/completions",
        json={"model": "hybrid", "messages": [{"role": "wizard", "content": "hi"}]},
    )
    _assert_error(response, 400, param="messages[0].role")


def test_empty_messages_is_400(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={"model": "hybrid", "messages": []})
    _assert_error(response, 400, param="messages")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("n", 2),
        ("tools", [{"type": "function", "function": {"name": "f"}}]),
        ("response_format", {"type": "json_object"}),
        ("logit_bias", {"42": 5}),
        ("no_such_field", 1),
    ],
)
def test_unsupported_fields_are_refused_not_ignored(client: TestClient, field, value) -> None:
    body = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}], field: value}
    _assert_error(client.post("/v1/chat/completions", json=body), 400, param=field)


def test_image_content_is_refused(client: TestClient) -> None:
    messages = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    response = client.post("/v1/chat/completions", json={"model": "hybrid", "messages": messages})
    _assert_error(response, 400, param="messages[0].content")


def test_top_logprobs_needs_logprobs(client: TestClient) -> None:
    body = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}], "top_logprobs": 2}
    _assert_error(client.post("/v1/chat/completions", json=body), 400, param="top_logprobs")


def test_unknown_model_is_404(client: TestClient, engine: FakeEngine) -> None:
    body = {"model": "gpt-9", "messages": [{"role": "user", "content": "hi"}]}
    _assert_error(
        client.post("/v1/chat/completions", json=body), 404, param="model", code="model_not_found"
    )
    assert engine.history == []


def test_prompt_longer_than_context(client: TestClient, engine: FakeEngine) -> None:
    long_text = " ".join(["word"] * 300)  # the fake context holds 256 tokens
    body = {"model": "hybrid", "messages": [{"role": "user", "content": long_text}]}
    _assert_error(
        client.post("/v1/chat/completions", json=body),
        400,
        param="messages",
        code="context_length_exceeded",
    )
    assert engine.history == []


def test_prompt_plus_max_tokens_beyond_context(client: TestClient) -> None:
    body = {
        "model": "local",
        "messages": [{"role": "user", "content": "hi"}],
        "max_tokens": 255,
    }
    _assert_error(
        client.post("/v1/chat/completions", json=body),
        400,
        param="max_tokens",
        code="context_length_exceeded",
    )


def test_too_many_stop_sequences(client: TestClient) -> None:
    body = {
        "model": "hybrid",
        "messages": [{"role": "user", "content": "hi"}],
        "stop": ["a", "b", "c", "d", "e"],
    }
    _assert_error(client.post("/v1/chat/completions", json=body), 400, param="stop")


def test_full_queue_is_503_with_retry_after(engine: FakeEngine, settings) -> None:
    from gateway import create_app
    from tests.fakes import FakeEngine as Fake

    busy = Fake(max_waiting=0)
    busy.enqueue(["slow"] * 50, delay=0.05)
    with TestClient(create_app(settings, engine_factory=lambda _: busy)) as client:
        body = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}], "stream": True}
        with client.stream("POST", "/v1/chat/completions", json=body) as first:
            assert first.status_code == 200
            second = client.post("/v1/chat/completions", json={**body, "stream": False})
            error = _assert_error(second, 503, code="queue_full")
            assert error["type"] == "server_error"
            assert second.headers["retry-after"] == "3"
            ready = client.get("/readyz")
            assert ready.status_code == 503
            assert "local queue full" in ready.json()["reasons"]


def test_unknown_path_is_openai_shaped_404(client: TestClient) -> None:
    _assert_error(client.get("/v1/nothing"), 404)


def test_wrong_method_is_405(client: TestClient) -> None:
    _assert_error(client.get("/v1/chat/completions"), 405)
