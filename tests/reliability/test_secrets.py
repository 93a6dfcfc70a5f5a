"""Canary keys after the failure paths have run, on ``hybrid-gateway serve`` logging at DEBUG.

The upstream key must reach the upstream's Authorization header and nothing
else: not the gateway's log (uvicorn, httpx and httpcore included, at DEBUG),
the ledger's files, /metrics, /readyz, /v1/usage, nor any response. A client
canary key sent in ``Authorization`` must not be repeated anywhere either.
The upstream misbehaves on purpose and echoes the key it was sent in its
errors. (tests/gateway/test_secrets_end_to_end.py checks the same paths in
process, with captured logging; this runs the real server and reads its real
output and files.)
"""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import UPSTREAM_KEY, Results, Upstream
from tests.reliability.harness import GatewayProcess

pytestmark = pytest.mark.model

CLIENT_KEY = "sk-client-canary-0e4f1c9a7b3d5e21"
MISBEHAVIOURS = ["echo400", "echo401", "echo500", "garbage", "cutstream"]


def test_canary_keys_appear_nowhere_after_failures(
    tmp_path: Path, upstream: Upstream, results: Results
) -> None:
    env = {
        "GATEWAY_SERVER__LOG_LEVEL": "debug",
        "GATEWAY_CLOUD__BASE_URL": f"{upstream.url}/v1",
        "GATEWAY_CLOUD__MODEL": "stand-in",
        "GATEWAY_CLOUD__API_KEY": UPSTREAM_KEY,
        "GATEWAY_CLOUD__MAX_ATTEMPTS": "1",
        # Opens on the last echo500s: every misbehaviour reaches the upstream first.
        "GATEWAY_CLOUD__BREAKER_FAILURES": "9",
    }
    seen: list[str] = []
    statuses: list[str] = []
    calls_before = len(upstream.recorder.snapshot())
    with GatewayProcess(tmp_path, env, name="secrets") as gateway:
        headers = {"authorization": f"Bearer {CLIENT_KEY}"}
        with httpx.Client(base_url=gateway.url, headers=headers, timeout=120) as client:
            # every misbehaviour, streamed and not; then the circuit is open: fail fast
            # a good answer first (its DEBUG line shows the log level took effect), then
            for word in ["hello", *MISBEHAVIOURS, "echo500", "echo500", "echo500"]:
                for stream in (False, True):
                    body = {
                        "model": "cloud",
                        "messages": [{"role": "user", "content": f"{word} now"}],
                        "max_tokens": 4,
                        "stream": stream,
                    }
                    response = client.post("/v1/chat/completions", json=body)
                    statuses.append(f"{word}{' stream' if stream else ''}: {response.status_code}")
                    seen += [response.text, str(response.headers)]
            local = {"model": "local", "prompt": "1, 2,", "max_tokens": 2}
            seen.append(client.post("/v1/completions", json=local).text)
            for path in ("/readyz", "/metrics", "/v1/usage?since=all", "/v1/models"):
                seen.append(client.get(path).text)
            readyz = client.get("/readyz").json()
        gateway.signal(signal.SIGTERM)
        assert gateway.wait(timeout=120) == 0
    log = gateway.log()
    ledger_files = sorted(gateway.ledger_path.parent.glob(gateway.ledger_path.name + "*"))
    stored = [path.read_bytes() for path in ledger_files]
    calls = upstream.recorder.snapshot()[calls_before:]

    # The scenario ran: the key reached the upstream, which echoed it; the log is at DEBUG;
    # the circuit opened; the upstream's 400 message was passed on, redacted.
    assert calls and {c.authorization for c in calls} == {f"Bearer {UPSTREAM_KEY}"}
    for word in MISBEHAVIOURS:
        assert len([c for c in calls if word in c.text]) >= 2, word
    assert " DEBUG gateway.cloud.client: cloud chat answered" in log
    assert "INFO httpx: HTTP Request: POST" in log  # httpx logs every upstream request
    assert readyz["cloud"]["circuit"]["state"] == "open"
    assert any("bad request from" in text for text in seen)
    assert stored and len(gateway.ledger_rows()) >= len(MISBEHAVIOURS) * 2
    for canary in (UPSTREAM_KEY, CLIENT_KEY):
        assert canary not in log
        for text in seen:
            assert canary not in text
        for content in stored:
            assert canary.encode() not in content
    results.record(
        "secrets at DEBUG",
        requests=statuses,
        log_lines=len(log.splitlines()),
        ledger_files=[p.name for p in ledger_files],
        canaries_found=0,
    )
