"""The gateway with a real "cloud": llama.cpp's own OpenAI-compatible server on loopback.

A recording proxy sits between the gateway and the stand-in cloud so tests can
assert what reached the upstream (and, for the privacy floor, that nothing did).
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from gateway import Settings, create_app
from tests.integration.conftest import ServerThread

pytestmark = pytest.mark.model

CANARY_KEY = "sk-canary-7f3e9b2c1d"

POLICY = """
version: 1
privacy:
  detectors: [email]
rules:
  - name: wants-cloud
    route: cloud
    match:
      keywords: [cloudplease]
  - name: check-me
    route: local_then_check
    match:
      keywords: [checkme]
default: local
gate:
  signal: min
  # every real answer has some token below probability 1: always escalate
  threshold: {threshold}
  holdback_tokens: 4
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class Recorded:
    calls: list[dict[str, Any]] = field(default_factory=list)


def _proxy_app(upstream: str, recorded: Recorded) -> Starlette:
    client = httpx.AsyncClient(base_url=upstream, timeout=60)

    async def forward(request: Request) -> Response:
        body = await request.body()
        recorded.calls.append(
            {
                "path": request.url.path,
                "authorization": request.headers.get("authorization"),
                "body": body.decode(),
            }
        )
        upstream_request = client.build_request(
            request.method,
            request.url.path,
            content=body,
            headers={"content-type": request.headers.get("content-type", "application/json")},
        )
        response = await client.send(upstream_request, stream=True)

        async def relay() -> Any:
            try:
                async for chunk in response.aiter_raw():
                    yield chunk
            finally:
                await response.aclose()

        return StreamingResponse(
            relay(),
            status_code=response.status_code,
            media_type=response.headers.get("content-type"),
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        try:
            yield
        finally:
            await client.aclose()

    return Starlette(
        routes=[Route("/{path:path}", forward, methods=["GET", "POST"])], lifespan=lifespan
    )


@pytest.fixture(scope="module")
def stand_in_cloud(model_path: Path) -> Iterator[str]:
    port = _free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "llama_cpp.server",
            "--model",
            str(model_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--n_ctx",
            "1024",
            "--n_threads",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env={k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, "llama_cpp.server exited"
            try:
                if httpx.get(f"{url}/v1/models", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "llama_cpp.server did not start"
            time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)


@dataclass
class Hybrid:
    url: str
    recorded: Recorded
    policy: Path

    def sdk(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key="client-key", max_retries=0)


@pytest.fixture(scope="module")
def hybrid(stand_in_cloud: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hybrid]:
    recorded = Recorded()
    policy = tmp_path_factory.mktemp("policy") / "policy.yaml"
    policy.write_text(POLICY.format(threshold="0.0"))
    with ServerThread(_proxy_app(stand_in_cloud, recorded)) as proxy:
        settings = Settings(
            local={"n_ctx": 1024},
            cloud={"base_url": f"{proxy.url}/v1", "model": "stand-in", "api_key": CANARY_KEY},
            policy={"file": policy, "reload_interval_s": 0.1},
            ledger={"path": policy.with_name("ledger.sqlite3")},
        )
        with ServerThread(create_app(settings)) as gateway:
            yield Hybrid(gateway.url, recorded, policy)


def _ask(hybrid: Hybrid, text: str, **extra: Any) -> Any:
    with hybrid.sdk() as sdk:
        return sdk.chat.completions.with_raw_response.create(
            model=extra.pop("model", "hybrid"),
            messages=[{"role": "user", "content": text}],
            max_tokens=8,
            temperature=0,
            **extra,
        )


def test_local_route_never_calls_the_cloud(hybrid: Hybrid) -> None:
    before = len(hybrid.recorded.calls)
    raw = _ask(hybrid, "Name a colour.")
    assert raw.headers["x-hybrid-route"] == "local"
    assert raw.parse().choices[0].message.content
    assert len(hybrid.recorded.calls) == before


def test_cloud_route_reaches_the_upstream(hybrid: Hybrid) -> None:
    before = len(hybrid.recorded.calls)
    raw = _ask(hybrid, "cloudplease name a colour")
    assert raw.headers["x-hybrid-route"] == "cloud"
    assert raw.headers["x-hybrid-reason"] == "wants-cloud"
    completion = raw.parse()
    assert completion.model == "hybrid"
    assert completion.choices[0].message.content
    assert completion.usage is not None and completion.usage.completion_tokens > 0
    call = hybrid.recorded.calls[before]
    assert call["path"] == "/v1/chat/completions"
    assert call["authorization"] == f"Bearer {CANARY_KEY}"  # the gateway's key, not the client's
    assert '"model":"stand-in"' in call["body"].replace(" ", "")


def test_weak_answer_escalates_to_the_cloud(hybrid: Hybrid) -> None:
    before = len(hybrid.recorded.calls)
    raw = _ask(hybrid, "checkme what is the capital of Peru?")
    assert raw.headers["x-hybrid-route"] == "local->cloud"
    assert float(raw.headers["x-hybrid-confidence"]) < 0
    assert raw.parse().choices[0].message.content
    assert len(hybrid.recorded.calls) == before + 1


def test_streamed_escalation_relays_the_cloud_stream(hybrid: Hybrid) -> None:
    with hybrid.sdk() as sdk:
        raw = sdk.chat.completions.with_raw_response.create(
            model="hybrid",
            messages=[{"role": "user", "content": "checkme tell me a joke"}],
            max_tokens=8,
            temperature=0,
            stream=True,
            stream_options={"include_usage": True},
        )
        assert raw.headers["x-hybrid-route"] == "local->cloud"
        chunks = list(raw.parse())
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert {c.model for c in chunks} == {"hybrid"}
    assert len({c.id for c in chunks}) == 1
    # llama.cpp's server sends no usage when streaming: the gateway counts it
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_streamed_cloud_route_and_local_route(hybrid: Hybrid) -> None:
    with hybrid.sdk() as sdk:
        for text, route in (("cloudplease say hi", "cloud"), ("say hi", "local")):
            raw = sdk.chat.completions.with_raw_response.create(
                model="hybrid",
                messages=[{"role": "user", "content": text}],
                max_tokens=6,
                temperature=0,
                stream=True,
            )
            assert raw.headers["x-hybrid-route"] == route
            pieces = [c.choices[0].delta.content or "" for c in raw.parse() if c.choices]
            assert "".join(pieces)


def test_privacy_floor_keeps_the_request_on_the_machine(hybrid: Hybrid) -> None:
    before = len(hybrid.recorded.calls)
    for model in ("hybrid", "cloud"):
        raw = _ask(hybrid, "cloudplease checkme write to bob@example.org", model=model)
        assert raw.headers["x-hybrid-route"] == "local"
        assert raw.headers["x-hybrid-reason"] == "privacy-floor"
    assert len(hybrid.recorded.calls) == before


def test_models_include_the_cloud_id(hybrid: Hybrid) -> None:
    with hybrid.sdk() as sdk:
        assert [m.id for m in sdk.models.list()] == ["hybrid", "local", "cloud"]


def test_policy_edit_is_picked_up_without_restart(hybrid: Hybrid) -> None:
    original = hybrid.policy.read_text()
    try:
        hybrid.policy.write_text(original.replace("cloudplease", "elsewhere"))
        deadline = time.monotonic() + 30
        while _ask(hybrid, "cloudplease hi").headers["x-hybrid-route"] != "local":
            assert time.monotonic() < deadline, "the edited policy was not loaded"
            time.sleep(0.1)
        hybrid.policy.write_text("rules: [this is not a policy")
        time.sleep(0.5)
        # a broken file keeps the last good policy
        assert _ask(hybrid, "elsewhere hi").headers["x-hybrid-route"] == "cloud"
    finally:
        hybrid.policy.write_text(original)
        deadline = time.monotonic() + 30
        while _ask(hybrid, "cloudplease hi").headers["x-hybrid-route"] != "cloud":
            assert time.monotonic() < deadline
            time.sleep(0.1)
