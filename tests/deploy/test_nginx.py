"""deploy/nginx/nginx.conf running: a real nginx in front of real gateways on loopback.

The shipped file is used as it is, except for its listen port and the replicas'
addresses (compose gives them fixed addresses on its own network; here they
are gateways under uvicorn on free loopback ports, with a FakeEngine each).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from gateway import Settings, create_app
from tests.deploy.tools import GUARD_S, closed_address, require_tool, running_nginx
from tests.fakes import FakeEngine
from tests.integration.conftest import ServerThread

CHAT = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(autouse=True)
def _nginx_installed() -> None:
    """Skip (or fail, see tools.py) before any gateway is started."""
    require_tool("nginx")


@dataclass
class Replica:
    address: str
    engine: FakeEngine


@contextmanager
def replicas(tmp_path: Path, count: int) -> Iterator[list[Replica]]:
    """``count`` gateways (the real app, FakeEngine) under uvicorn on loopback."""
    with contextlib.ExitStack() as stack:
        started = []
        for i in range(count):
            engine = FakeEngine()
            settings = Settings(ledger={"path": tmp_path / f"ledger-{i}.sqlite3"})
            app = create_app(settings, engine_factory=lambda _, e=engine: e)
            server = stack.enter_context(ServerThread(app))
            started.append(Replica(f"127.0.0.1:{server.port}", engine))
        yield started


# --- health -------------------------------------------------------------------


def test_health_endpoints(tmp_path: Path) -> None:
    with (
        replicas(tmp_path, 2) as gateways,
        running_nginx(tmp_path, [g.address for g in gateways]) as lb,
    ):
        own = httpx.get(f"{lb.url}/nginx-health")
        assert own.status_code == 200
        assert own.headers["content-type"] == "application/json"
        assert own.json() == {"status": "ok"}
        # the gateway's own probes pass through to a replica
        assert httpx.get(f"{lb.url}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{lb.url}/readyz").json()["status"] == "ready"
    assert all(entry["uri"] != "/nginx-health" for entry in lb.access_log())


# --- balancing and request ids --------------------------------------------------


def test_requests_spread_over_the_replicas_with_their_request_ids(tmp_path: Path) -> None:
    with (
        replicas(tmp_path, 2) as gateways,
        running_nginx(tmp_path, [g.address for g in gateways]) as lb,
    ):
        with httpx.Client(base_url=lb.url) as client:
            for i in range(6):
                answer = client.post(
                    "/v1/chat/completions", json=CHAT, headers={"x-request-id": f"deploy-{i}"}
                )
                assert answer.status_code == 200, answer.text
                assert answer.headers["x-request-id"] == f"deploy-{i}"
                assert answer.json()["choices"][0]["message"]["content"] == "Hello world"
            # without one, nginx makes one up, and the gateway uses it
            anonymous = client.post("/v1/chat/completions", json=CHAT)
        made_up = anonymous.headers["x-request-id"]
        assert re.fullmatch(r"[0-9a-f]{32}", made_up)
        served = [len(g.engine.history) for g in gateways]
        assert sum(served) == 7
        assert min(served) >= 3  # least connections, ties taken in turn
    logged = {entry["request_id"]: entry for entry in lb.access_log()}
    assert set(logged) == {*(f"deploy-{i}" for i in range(6)), made_up}
    assert {entry["upstream"] for entry in logged.values()} == {g.address for g in gateways}
    assert all(entry["status"] == 200 for entry in logged.values())


def test_a_replica_that_is_down_is_routed_around(tmp_path: Path) -> None:
    with (
        replicas(tmp_path, 1) as (gateway,),
        running_nginx(tmp_path, [closed_address(), gateway.address]) as lb,
    ):
        with httpx.Client(base_url=lb.url) as client:
            for _ in range(4):
                answer = client.post("/v1/chat/completions", json=CHAT)
                assert answer.status_code == 200, answer.text
    # each request reached the live replica exactly once: a POST is never sent twice
    assert len(gateway.engine.history) == 4


def test_no_replica_is_an_openai_error(tmp_path: Path) -> None:
    with running_nginx(tmp_path, [closed_address(), closed_address()]) as lb:
        answer = httpx.post(f"{lb.url}/v1/chat/completions", json=CHAT)
    assert answer.status_code == 502
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["retry-after"] == "5"
    assert answer.json() == {
        "error": {
            "message": "no gateway replica is reachable",
            "type": "server_error",
            "param": None,
            "code": "no_gateway_available",
        }
    }


# --- body limit -----------------------------------------------------------------


def _body_of(size: int) -> bytes:
    """A valid chat request of exactly ``size`` bytes (JSON allows trailing blanks)."""
    body = json.dumps(CHAT).encode()
    return body + b" " * (size - len(body))


def test_body_limit_matches_the_gateways(tmp_path: Path) -> None:
    limit = Settings().limits.max_body_bytes
    headers = {"content-type": "application/json"}
    with (
        replicas(tmp_path, 2) as gateways,
        running_nginx(tmp_path, [g.address for g in gateways]) as lb,
    ):
        at_limit = httpx.post(
            f"{lb.url}/v1/chat/completions", content=_body_of(limit), headers=headers
        )
        assert at_limit.status_code == 200, at_limit.text
        over = _body_of(limit + 1)
        from_nginx = httpx.post(f"{lb.url}/v1/chat/completions", content=over, headers=headers)
        direct = httpx.post(
            f"http://{gateways[0].address}/v1/chat/completions", content=over, headers=headers
        )
        # chunked (no Content-Length): counted as it arrives
        chunked = httpx.post(
            f"{lb.url}/v1/chat/completions",
            content=iter([over[: limit // 2], over[limit // 2 :]]),
            headers=headers,
        )
        assert sum(len(g.engine.history) for g in gateways) == 1
    assert direct.status_code == 413
    for refused in (from_nginx, chunked):
        assert refused.status_code == 413
        assert refused.headers["content-type"] == "application/json"
        assert refused.json() == direct.json()
    # nginx answered these itself: no replica was asked
    refusals = [entry for entry in lb.access_log() if entry["status"] == 413]
    assert len(refusals) == 2
    assert all(entry["upstream"] == "" for entry in refusals)


# --- connections to the replicas ----------------------------------------------


class RecordingUpstream:
    """Answers every request with {} and keeps what nginx sent: HTTP version and headers."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.connections = 0

    def serve(self) -> ServerThread:
        """Under uvicorn, counting the TCP connections it accepts."""
        upstream = self

        class CountingH11(H11Protocol):
            def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
                upstream.connections += 1
                super().connection_made(transport)

        thread = ServerThread(self)  # type: ignore[arg-type]
        thread.server.config.http = CountingH11
        return thread

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        self.requests.append((scope["http_version"], headers))
        while (await receive()).get("more_body"):
            pass
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")],
            }
        )
        await send({"type": "http.response.body", "body": b"{}"})


def test_connections_to_the_replicas_are_kept_alive(tmp_path: Path) -> None:
    upstreams = [RecordingUpstream(), RecordingUpstream()]
    with contextlib.ExitStack() as stack:
        servers = [stack.enter_context(u.serve()) for u in upstreams]
        lb = stack.enter_context(running_nginx(tmp_path, [f"127.0.0.1:{s.port}" for s in servers]))
        with httpx.Client(base_url=lb.url) as client:
            for i in range(6):
                answer = client.post(
                    "/v1/chat/completions", json=CHAT, headers={"x-request-id": f"k{i}"}
                )
                assert answer.status_code == 200
    for upstream in upstreams:
        assert len(upstream.requests) == 3
        assert upstream.connections == 1  # three requests, one connection
        for version, headers in upstream.requests:
            assert version == "1.1"
            assert "connection" not in headers  # no "close"
            assert headers["x-forwarded-for"] == "127.0.0.1"
    sent = sorted(h["x-request-id"] for u in upstreams for _, h in u.requests)
    assert sent == [f"k{i}" for i in range(6)]


# --- streaming ------------------------------------------------------------------


class GatedStream:
    """An SSE upstream that sends its second event only once the client has the first.

    If anything between them held events back (a buffer waiting to fill, gzip),
    the client would not see the first event until the stream ends; the upstream
    then gives up waiting after GUARD_S and records that it had to.
    """

    def __init__(self) -> None:
        self.first_seen = threading.Event()
        self.gave_up = False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"text/event-stream")],
            }
        )
        await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
        self.gave_up = not await asyncio.to_thread(self.first_seen.wait, GUARD_S)
        await send({"type": "http.response.body", "body": b"data: second\n\n"})


def test_each_event_reaches_the_client_when_written(tmp_path: Path) -> None:
    upstream = GatedStream()
    with ServerThread(upstream) as server:  # type: ignore[arg-type]
        address = f"127.0.0.1:{server.port}"
        with running_nginx(tmp_path, [address, address]) as lb:
            received = b""
            with httpx.stream("POST", f"{lb.url}/v1/chat/completions", json=CHAT) as answer:
                assert answer.headers["content-type"] == "text/event-stream"
                for chunk in answer.iter_raw():
                    received += chunk
                    if b"data: first\n\n" in received:
                        upstream.first_seen.set()
    assert received == b"data: first\n\ndata: second\n\n"
    assert not upstream.gave_up


def test_a_gateway_stream_through_nginx(tmp_path: Path) -> None:
    with (
        replicas(tmp_path, 2) as gateways,
        running_nginx(tmp_path, [g.address for g in gateways]) as lb,
    ):
        with httpx.stream(
            "POST", f"{lb.url}/v1/chat/completions", json={**CHAT, "stream": True}
        ) as answer:
            assert answer.status_code == 200
            events = [line[6:] for line in answer.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    content = "".join(
        chunk["choices"][0]["delta"].get("content") or ""
        for chunk in map(json.loads, events[:-1])
        if chunk["choices"]
    )
    assert content == "Hello world"


def test_a_client_that_leaves_stops_the_generation(tmp_path: Path) -> None:
    with (
        replicas(tmp_path, 1) as (gateway,),
        running_nginx(tmp_path, [gateway.address, gateway.address]) as lb,
    ):
        # long enough never to finish while the test runs
        gateway.engine.enqueue([" word"] * 2000, delay=0.02)
        with httpx.stream(
            "POST", f"{lb.url}/v1/chat/completions", json={**CHAT, "stream": True}
        ) as answer:
            for line in answer.iter_lines():
                if line.startswith("data: ") and "word" in line:
                    break
        deadline = time.monotonic() + GUARD_S
        while not gateway.engine.cancelled and time.monotonic() < deadline:
            time.sleep(0.05)
        assert gateway.engine.cancelled == gateway.engine.history
