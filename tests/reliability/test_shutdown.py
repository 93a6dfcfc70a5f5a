"""SIGTERM with streams in flight, on ``hybrid-gateway serve`` in its own process.

The gateway must stop accepting connections at once, let the requests it has
started finish within ``GATEWAY_SERVER__SHUTDOWN_GRACE_S``, flush the ledger
and exit 0, leaving exactly one ledger record per request that reached it.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import Results
from tests.reliability.harness import GatewayProcess, wait_for
from tests.reliability.streams import BackgroundStream

pytestmark = pytest.mark.model

COUNTING = "1, 2, 3, 4, 5, 6, 7, 8,"
CUT_MESSAGE = "timeout graceful shutdown exceeded"  # uvicorn's, when the grace runs out


def _probe(url: str) -> str:
    """What a new client gets now: 'refused', 'reset', or the status of GET /healthz.

    'reset': the kernel had completed the handshake into the listening socket's
    backlog just as the server closed it, so the connection was reset before any
    answer (seen once in CI). To the client that is a refusal, a moment early.
    """
    try:
        # A new connection each time: keep-alive ones are closed by the shutdown anyway.
        return str(httpx.get(f"{url}/healthz", timeout=30).status_code)
    except httpx.ConnectError:
        return "refused"
    except httpx.ReadError:
        return "reset"


def _streams(gateway: GatewayProcess, count: int, max_tokens: int) -> list[BackgroundStream]:
    body = {"model": "local", "prompt": COUNTING, "max_tokens": max_tokens, "temperature": 0}
    streams = [
        BackgroundStream(gateway.url, "/v1/completions", body, request_id=f"in-flight-{i}")
        for i in range(count)
    ]
    for stream in streams:
        stream.start()

    def all_accepted() -> bool:
        status = gateway.engine_status()
        return bool(status["running"] + status["waiting"] == count)

    # One generating and the rest queued, and the first token out: all of them in flight.
    wait_for(all_accepted, "every stream to reach the local model", timeout=120)
    wait_for(lambda: any(s.tokens for s in streams), "the first token", timeout=120)
    return streams


def test_sigterm_lets_streams_in_flight_finish(tmp_path: Path, results: Results) -> None:
    count, max_tokens = 3, 24
    env = {"GATEWAY_SERVER__SHUTDOWN_GRACE_S": "120"}
    with GatewayProcess(tmp_path, env, name="shutdown") as gateway:
        streams = _streams(gateway, count, max_tokens)
        signalled = time.monotonic()
        gateway.signal(signal.SIGTERM)
        probes = [_probe(gateway.url)]
        while probes[-1] != "refused":
            assert time.monotonic() - signalled < 60, probes
            time.sleep(0.02)
            probes.append(_probe(gateway.url))
        refused = time.monotonic()
        unfinished_at_refusal = sum(not s.finished.is_set() for s in streams)
        for stream in streams:
            stream.join(timeout=300)
        code = gateway.wait(timeout=300)
        exited = time.monotonic()
        rows = gateway.ledger_rows()

    # New connections were refused while the old streams were still running ...
    assert set(probes) <= {"200", "reset", "refused"}, probes
    assert unfinished_at_refusal >= 1
    # ... and every stream in flight ran to its end.
    for stream in streams:
        assert stream.status == 200 and stream.done, (stream.failure, stream.events[-3:])
        assert stream.tokens > 0
    assert code == 0, gateway.log()[-3000:]
    assert not gateway.log_has(CUT_MESSAGE)
    assert "Traceback" not in gateway.log()
    # The ledger was flushed: exactly one record per request started, all served.
    assert sorted(r["request_id"] for r in rows) == sorted(s.request_id for s in streams)
    assert {r["status"] for r in rows} == {200}
    results.record(
        "shutdown, grace long enough",
        streams_in_flight=count,
        max_tokens=max_tokens,
        refused_after_s=round(refused - signalled, 3),
        streams_unfinished_at_refusal=unfinished_at_refusal,
        exit_after_s=round(exited - signalled, 3),
        exit_code=code,
        ledger_records=len(rows),
    )


def test_sigterm_cuts_streams_when_the_grace_period_ends(tmp_path: Path, results: Results) -> None:
    grace = 1
    env = {"GATEWAY_SERVER__SHUTDOWN_GRACE_S": str(grace)}
    with GatewayProcess(tmp_path, env, name="shutdown-cut") as gateway:
        # Far longer than the grace period: hundreds of tokens each.
        streams = _streams(gateway, 2, 900)
        signalled = time.monotonic()
        gateway.signal(signal.SIGTERM)
        for stream in streams:
            stream.join(timeout=300)
        code = gateway.wait(timeout=300)
        exited = time.monotonic()
        rows = gateway.ledger_rows()

    assert code == 0, gateway.log()[-3000:]
    assert gateway.log_has(CUT_MESSAGE)
    for stream in streams:
        assert not stream.done  # cut, not finished
    # Still exactly one record each, whatever the cut left.
    assert sorted(r["request_id"] for r in rows) == sorted(s.request_id for s in streams)
    results.record(
        "shutdown, grace exceeded",
        grace_s=grace,
        exit_after_s=round(exited - signalled, 3),
        exit_code=code,
        tokens_streamed_before_cut=[s.tokens for s in streams],
        ledger_statuses=sorted(f"{r['status']} {r['error']}" for r in rows),
    )
