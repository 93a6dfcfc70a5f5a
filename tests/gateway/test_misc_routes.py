from __future__ import annotations

from fastapi.testclient import TestClient

from tests.fakes import FakeEngine


def test_models_lists_routed_and_local_ids(client: TestClient) -> None:
    body = client.get("/v1/models").json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == ["hybrid", "local"]
    assert client.get("/v1/models/local").json()["id"] == "local"
    assert client.get("/v1/models/nope").json()["error"]["code"] == "model_not_found"


def test_health_and_ready(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["status"] == "ready"
    assert ready.json()["local"]["model"] == "fake"


def test_request_id_is_echoed_or_created(client: TestClient) -> None:
    echoed = client.get("/healthz", headers={"x-request-id": "abc-123"})
    assert echoed.headers["x-request-id"] == "abc-123"
    fresh = client.get("/healthz")
    assert fresh.headers["x-request-id"].startswith("req_")
    hostile = client.get("/healthz", headers={"x-request-id": "bad id\twith spaces"})
    assert hostile.headers["x-request-id"].startswith("req_")


def test_errors_carry_request_id(client: TestClient) -> None:
    response = client.post("/v1/chat/completions", json={}, headers={"x-request-id": "r1"})
    assert response.status_code == 400
    assert response.headers["x-request-id"] == "r1"


def test_text_completion(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue([" Paris", "."], logprobs=[-0.1, -0.2])
    body = client.post(
        "/v1/completions",
        json={"model": "local", "prompt": "The capital of France is", "logprobs": 0},
    ).json()
    assert body["object"] == "text_completion"
    choice = body["choices"][0]
    assert choice["text"] == " Paris."
    assert choice["logprobs"]["tokens"] == [" Paris", "."]
    assert choice["logprobs"]["token_logprobs"] == [-0.1, -0.2]
    assert choice["logprobs"]["text_offset"] == [0, 6]
    # OpenAI's default for legacy completions
    assert engine.history[0].max_tokens == 16


def test_text_completion_accepts_token_ids(client: TestClient, engine: FakeEngine) -> None:
    ok = client.post("/v1/completions", json={"model": "local", "prompt": [5, 6, 7]})
    assert ok.status_code == 200
    assert engine.history[0].prompt_tokens == (5, 6, 7)
    bad = client.post("/v1/completions", json={"model": "local", "prompt": [5, 10**6]})
    assert bad.status_code == 400
    assert bad.json()["error"]["param"] == "prompt"


def test_text_completion_refuses_echo_and_batches(client: TestClient) -> None:
    echo = client.post("/v1/completions", json={"model": "local", "prompt": "x", "echo": True})
    assert echo.json()["error"]["param"] == "echo"
    batch = client.post("/v1/completions", json={"model": "local", "prompt": ["a", "b"]})
    assert batch.json()["error"]["param"] == "prompt"


def test_text_completion_stream(client: TestClient, engine: FakeEngine) -> None:
    engine.enqueue(["a", "b"])
    with client.stream(
        "POST", "/v1/completions", json={"model": "local", "prompt": "x", "stream": True}
    ) as response:
        text = response.read().decode()
    assert text.endswith("data: [DONE]\n\n")
    assert '"object":"text_completion"' in text


def test_metrics_can_be_switched_off(engine: FakeEngine) -> None:
    from gateway import Settings, create_app

    app = create_app(Settings(server={"metrics": False}), engine_factory=lambda _: engine)
    with TestClient(app) as client:
        assert (
            client.post(
                "/v1/chat/completions",
                json={"model": "local", "messages": [{"role": "user", "content": "hi"}]},
            ).status_code
            == 200
        )
        off = client.get("/metrics")
    assert off.status_code == 404
    assert "GATEWAY_SERVER__METRICS" in off.json()["error"]["message"]
