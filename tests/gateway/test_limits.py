"""Body size, message count and prompt length limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway import Settings, create_app
from gateway.settings import LimitSettings
from tests.fakes import FakeEngine

LIMIT = 4096


@pytest.fixture
def settings() -> Settings:
    return Settings(
        limits=LimitSettings(max_body_bytes=LIMIT, max_messages=3, max_prompt_tokens=50)
    )


def _chat(content: str = "hi", n: int = 1) -> dict[str, Any]:
    return {"model": "hybrid", "messages": [{"role": "user", "content": content}] * n}


def _assert_error(response: Any, status: int, *, param: str | None, code: str) -> None:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["type"] == "invalid_request_error"
    assert (error["param"], error["code"]) == (param, code)


def test_declared_content_length_over_the_limit_is_413(client: TestClient) -> None:
    body = json.dumps(_chat("x" * LIMIT)).encode()
    response = client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    _assert_error(response, 413, param=None, code="request_too_large")
    assert response.headers["x-request-id"]


def test_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "hybrid", "messages": [{"role": "user", "content": "'
        for _ in range(10):
            yield b"x" * 1000
        yield b'"}]}'

    response = client.post(
        "/v1/chat/completions",
        content=chunks(),
        headers={"content-type": "application/json", "x-request-id": "big-1"},
    )
    assert "content-length" not in response.request.headers
    _assert_error(response, 413, param=None, code="request_too_large")
    assert response.headers["x-request-id"] == "big-1"


def test_body_at_the_limit_passes(client: TestClient) -> None:
    base = len(json.dumps(_chat("")).encode())
    body = json.dumps(_chat(" " * (LIMIT - base - 2) + "hi")).encode()
    assert len(body) == LIMIT
    response = client.post(
        "/v1/chat/completions", content=body, headers={"content-type": "application/json"}
    )
    assert response.status_code == 200, response.text


def test_too_many_messages_is_400(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json=_chat(n=4))
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == "messages"
    assert client.post("/v1/chat/completions", json=_chat(n=3)).status_code == 200


def test_too_many_prompt_tokens_is_400(client: TestClient, engine: FakeEngine) -> None:
    words = " ".join(["word"] * 60)
    response = client.post("/v1/chat/completions", json=_chat(words))
    _assert_error(response, 400, param="messages", code="context_length_exceeded")
    response = client.post("/v1/completions", json={"model": "hybrid", "prompt": words})
    _assert_error(response, 400, param="prompt", code="context_length_exceeded")
    assert engine.history == []


async def test_chunked_body_is_refused_before_it_is_all_read(settings: Settings) -> None:
    """Driven over raw ASGI: the test client would read the whole generator itself."""
    engine = FakeEngine()
    app = create_app(settings, engine_factory=lambda _: engine)
    chunk = b"x" * 1000
    total = 1000  # a megabyte: far more than the 4 kB limit needs
    pulled = 0
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        nonlocal pulled
        pulled += 1
        if pulled == 1:
            return {"type": "http.request", "body": b'{"model": "hybrid", "', "more_body": True}
        return {"type": "http.request", "body": chunk, "more_body": pulled < total}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async with app.router.lifespan_context(app) as state:
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"content-type", b"application/json"), (b"x-request-id", b"raw-1")],
            "client": ("127.0.0.1", 1),
            "server": ("testserver", 80),
            "state": dict(state or {}),
        }
        await app(scope, receive, send)
        services = scope["state"]["services"]
        await services.recorder.drain()
        recorded = services.recorder.finished

    assert pulled <= LIMIT // len(chunk) + 2
    start = sent[0]
    assert start["type"] == "http.response.start"
    assert start["status"] == 413
    headers = {k.decode(): v.decode() for k, v in start["headers"]}
    assert headers["x-request-id"] == "raw-1"
    assert json.loads(sent[1]["body"])["error"]["code"] == "request_too_large"
    assert [m["status"] for m in sent if m["type"] == "http.response.start"] == [413]
    assert recorded == 1
