"""Clients that leave mid-answer, on the real gateway process.

Local route: generation stops (a departed stream's record shows how many tokens
were generated beyond what the client had received) and the request queued
behind it starts at once. Cloud route: the gateway closes its connection to
the upstream, which the recording upstream sees. A departed non-streamed local
request is covered by tests/integration/test_local_gateway.py.
"""

from __future__ import annotations

import json
import socket
import time
import uuid
from typing import Any

import pytest

from tests.reliability.conftest import Results, Upstream
from tests.reliability.harness import GatewayProcess, wait_for
from tests.reliability.streams import BackgroundStream
from tests.reliability.upstream import Call

pytestmark = pytest.mark.model

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
# Tokens the model may generate after the last one the client received: those on their
# way (the gateway writes at most every 20 ms) and one after the cancel. Far below the
# hundreds an unnoticed disconnect would cost.
TOKENS_AFTER_LEAVING = 16


def _record(gateway: GatewayProcess, request_id: str) -> dict[str, Any]:
    def find() -> dict[str, Any] | None:
        rows = [r for r in gateway.ledger_rows() if r["request_id"] == request_id]
        assert len(rows) <= 1
        return rows[0] if rows else None

    return wait_for(find, f"the ledger record of {request_id}")


def test_local_stream_disconnect_stops_generation_and_starts_the_next(
    local_gateway: GatewayProcess, results: Results
) -> None:
    gateway = local_gateway
    gateway.wait_idle()
    run = uuid.uuid4().hex[:8]
    body = {"model": "local", "prompt": COUNTING, "temperature": 0}
    leaving = BackgroundStream(
        gateway.url, "/v1/completions", {**body, "max_tokens": 600}, request_id=f"leaves-{run}"
    ).start()
    wait_for(lambda: leaving.tokens >= 3, "the first tokens", timeout=120)
    queued = BackgroundStream(
        gateway.url, "/v1/completions", {**body, "max_tokens": 8}, request_id=f"queued-{run}"
    ).start()
    wait_for(lambda: gateway.engine_status()["waiting"] == 1, "the second request to queue")
    leaving.leave.set()
    leaving.join(timeout=120)
    queued.join(timeout=300)

    left = _record(gateway, leaving.request_id)
    behind = _record(gateway, queued.request_id)
    assert leaving.closed_at_wall is not None and not leaving.done
    received = leaving.tokens
    generated = left["local_completion_tokens"]
    assert (left["status"], left["error"]) == (499, "client_disconnected")
    assert received <= generated <= received + TOKENS_AFTER_LEAVING
    assert queued.done and behind["status"] == 200
    # When the queued request started, by the server's clock, against when the first left.
    started_after_leave = behind["started_at"] + behind["local_queue_seconds"]
    results.record(
        "disconnect, local stream",
        tokens_received=received,
        tokens_generated=generated,
        tokens_after_last_received=generated - received,
        next_request_started_after_ms=round((started_after_leave - leaving.closed_at_wall) * 1000),
    )


def _upstream_call(upstream: Upstream, marker: str) -> Call:
    return wait_for(lambda: next(iter(upstream.recorder.calls_with(marker)), None), marker)


def _upstream_saw_disconnect(upstream: Upstream, marker: str) -> Call:
    def gone() -> Call | None:
        call = _upstream_call(upstream, marker)
        return call if call.disconnected_at is not None else None

    return wait_for(gone, "the upstream to see the gateway's connection close", timeout=30)


def test_cloud_stream_disconnect_closes_the_upstream_connection(
    hybrid_gateway: GatewayProcess, upstream: Upstream, results: Results
) -> None:
    marker = f"drip-{uuid.uuid4().hex[:8]}"
    body = {"model": "cloud", "messages": [{"role": "user", "content": f"{marker} please"}]}
    stream = BackgroundStream(
        hybrid_gateway.url, "/v1/chat/completions", body, request_id=marker, close_after=3
    ).start()
    stream.join(timeout=120)
    assert stream.closed_at is not None and stream.tokens >= 3, (stream.failure, stream.events)
    call = _upstream_saw_disconnect(upstream, marker)
    assert call.disconnected_at is not None
    record = _record(hybrid_gateway, marker)
    assert (record["status"], record["error"], record["route"]) == (
        499,
        "client_disconnected",
        "cloud",
    )
    results.record(
        "disconnect, cloud stream",
        upstream_closed_after_ms=round((call.disconnected_at - stream.closed_at) * 1000),
    )


def test_cloud_request_disconnect_closes_the_upstream_connection(
    hybrid_gateway: GatewayProcess, upstream: Upstream, results: Results
) -> None:
    marker = f"hang-{uuid.uuid4().hex[:8]}"
    payload = json.dumps(
        {"model": "cloud", "messages": [{"role": "user", "content": f"{marker} please"}]}
    ).encode()
    host, port = "127.0.0.1", int(hybrid_gateway.url.rsplit(":", 1)[1])
    with socket.create_connection((host, port)) as client:
        client.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
            + b"Content-Type: application/json\r\n"
            + f"x-request-id: {marker}\r\nContent-Length: {len(payload)}\r\n\r\n".encode()
            + payload
        )
        _upstream_call(upstream, marker)  # the gateway is waiting on the upstream now
        closed = time.monotonic()
    call = _upstream_saw_disconnect(upstream, marker)
    assert call.disconnected_at is not None
    record = _record(hybrid_gateway, marker)
    assert (record["status"], record["error"]) == (499, "client_disconnected")
    results.record(
        "disconnect, cloud request (not streamed)",
        upstream_closed_after_ms=round((call.disconnected_at - closed) * 1000),
    )
