"""A canary cloud key must not surface anywhere a client or an operator can see,
after the gateway's own error paths (not only the cloud client's) have run."""

from __future__ import annotations

import logging

import httpx
import pytest
from fastapi.testclient import TestClient

from gateway import Settings, create_app
from gateway.cloud import CloudClient
from tests.fakes import FakeEngine

CANARY = "sk-canary-e2e-0badc0de5ec2e7"


def _upstream(request: httpx.Request) -> httpx.Response:
    text = request.content.decode()
    auth = request.headers.get("authorization", "")
    if "unauthorized" in text:
        # a hostile or careless upstream echoing the key back
        return httpx.Response(401, json={"error": {"message": f"bad key {auth}"}})
    if "broken" in text:
        return httpx.Response(500, text=f"internal error for {auth}")
    if "invalid" in text:
        return httpx.Response(400, json={"error": {"message": f"nope {auth}", "param": "x"}})
    if "garbage" in text:
        return httpx.Response(200, text=f"not json {auth}")
    return httpx.Response(200, json={"choices": [], "usage": {}})


@pytest.mark.parametrize("stream", [False, True])
def test_canary_key_never_reaches_responses_or_logs(
    stream: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    settings = Settings(
        cloud={
            "base_url": "https://cloud.test/v1",
            "api_key": CANARY,
            "max_attempts": 1,
            "breaker_failures": 3,
        }
    )
    cloud = CloudClient(settings.cloud, transport=httpx.MockTransport(_upstream))
    app = create_app(settings, engine_factory=lambda _: FakeEngine(), cloud_factory=lambda _: cloud)
    seen: list[str] = []
    with TestClient(app) as client:
        # 400 passes the message on; 401, 500, bad JSON open the circuit; then fail-fast
        for word in ("invalid", "unauthorized", "broken", "garbage", "broken", "broken"):
            body = {
                "model": "cloud",
                "messages": [{"role": "user", "content": word}],
                "stream": stream,
            }
            response = client.post("/v1/chat/completions", json=body)
            assert response.status_code >= 400
            seen.append(response.text)
            seen.append(str(dict(response.headers)))
        ready = client.get("/readyz")
        assert ready.json()["cloud"]["circuit"]["state"] == "open"
        seen.append(ready.text)
        seen.append(client.get("/v1/models").text)
    seen.append(caplog.text)
    seen.extend(str(r.__dict__) for r in caplog.records)
    # the upstream's 400 message is passed on (so the redaction path really ran)
    assert any("nope" in text for text in seen)
    for text in seen:
        assert CANARY not in text
