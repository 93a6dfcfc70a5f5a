"""Two gateway processes on different ports, one Postgres ledger, concurrent load.

Each process is the real ``hybrid-gateway serve`` with the real model; both
start together (so both migrate the new schema at once) and write small
batches often, so their transactions interleave. After a graceful shutdown
the ledger must hold exactly one correct row per request: none lost, none
doubled, none from elsewhere.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest

from gateway.ledger.postgres import SCHEMA_VERSION
from tests.pg import free_port

pytestmark = pytest.mark.model

SCRIPT = Path(sys.executable).with_name("hybrid-gateway")
REQUESTS = 40


@dataclass(frozen=True)
class Expected:
    status: int
    route: str | None
    endpoint: str
    stream: bool


def _env(**settings: str) -> dict[str, str]:
    # Only this test's settings; authentication stays as the test session has it
    # (tests/conftest.py turns it off for apps built by tests).
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("GATEWAY_") or k.startswith("GATEWAY_AUTH__")
    }
    env.update(settings)
    return env


class Gateways:
    """Gateway processes sharing one ledger; ``stop`` ends them as an operator would."""

    def __init__(
        self, processes: list[subprocess.Popen[bytes]], ports: list[int], logs: list[Path]
    ):
        self._processes = processes
        self._logs = logs
        self.urls = [f"http://127.0.0.1:{port}" for port in ports]

    def stop(self) -> None:
        """SIGTERM (graceful: the ledger is flushed), wait, check that they exited cleanly."""
        for process in self._processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self._processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for process, log in zip(self._processes, self._logs, strict=True):
            output = log.read_text()
            # uvicorn shuts down gracefully, then re-raises SIGTERM so the exit status says so.
            assert process.returncode in (0, -signal.SIGTERM), output
            assert "Traceback" not in output, output

    def outputs(self) -> list[str]:
        return [log.read_text() for log in self._logs]


@pytest.fixture
def gateways(tmp_path: Path, postgres_url: str) -> Iterator[Gateways]:
    """Two gateways started together, sharing the ledger at ``postgres_url``."""
    env = _env(
        GATEWAY_LEDGER__URL=postgres_url,
        # Not used while URL is set: the test checks that no SQLite file appears.
        GATEWAY_LEDGER__PATH=str(tmp_path / "unused.sqlite3"),
        GATEWAY_LEDGER__BATCH_SIZE="3",
        GATEWAY_LEDGER__FLUSH_INTERVAL_S="0.05",
        GATEWAY_LOCAL__N_CTX="512",
        GATEWAY_LOCAL__N_THREADS="1",
        GATEWAY_LOCAL__N_THREADS_BATCH="1",
        GATEWAY_LOCAL__MAX_WAITING=str(REQUESTS),
    )
    ports = [free_port(), free_port()]
    processes: list[subprocess.Popen[bytes]] = []
    logs = [tmp_path / f"gateway-{n}.log" for n in range(len(ports))]
    try:
        for port, log in zip(ports, logs, strict=True):
            with log.open("wb") as out:
                processes.append(
                    subprocess.Popen(
                        [str(SCRIPT), "serve", "--port", str(port), "--log-level", "info"],
                        env=env,
                        stdout=out,
                        stderr=subprocess.STDOUT,
                    )
                )
        for process, port, log in zip(processes, ports, logs, strict=True):
            _wait_ready(process, port, log)
        yield Gateways(processes, ports, logs)
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait()
    assert not (tmp_path / "unused.sqlite3").exists()


def _wait_ready(process: subprocess.Popen[bytes], port: int, log: Path) -> None:
    deadline = time.monotonic() + 180
    while True:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        assert time.monotonic() < deadline, f"gateway on {port} never got ready"
        time.sleep(0.1)


def _request(n: int) -> tuple[str, dict[str, Any], Expected]:
    """Request number n: a chat, a streamed chat, a text completion or an unknown model."""
    chat = [{"role": "user", "content": f"Count to {n}."}]
    kind = n % 4
    if kind == 0:
        body = {"model": "hybrid", "messages": chat, "max_tokens": 4}
        return "/v1/chat/completions", body, Expected(200, "local", "chat", False)
    if kind == 1:
        body = {"model": "hybrid", "messages": chat, "max_tokens": 4, "stream": True}
        return "/v1/chat/completions", body, Expected(200, "local", "chat", True)
    if kind == 2:
        body = {"model": "local", "prompt": f"{n}, {n + 1},", "max_tokens": 4}
        return "/v1/completions", body, Expected(200, "local", "text", False)
    body = {"model": "no-such-model", "messages": chat, "max_tokens": 4}
    return "/v1/chat/completions", body, Expected(404, None, "chat", False)


async def _send_all(urls: list[str]) -> dict[str, Expected]:
    expected: dict[str, Expected] = {}

    async def one(client: httpx.AsyncClient, n: int) -> None:
        path, body, want = _request(n)
        request_id = f"shared-{n:03d}"
        response = await client.post(
            urls[n % 2] + path, json=body, headers={"x-request-id": request_id}
        )
        await response.aread()
        assert response.status_code == want.status, response.text
        assert response.headers["x-request-id"] == request_id
        if want.route is not None:
            assert response.headers["x-hybrid-route"] == want.route
        expected[request_id] = want

    async with httpx.AsyncClient(timeout=120) as client:
        await asyncio.gather(*(one(client, n) for n in range(REQUESTS)))
    return expected


def test_two_gateways_share_one_postgres_ledger(gateways: Gateways, postgres_url: str) -> None:
    expected = asyncio.run(_send_all(gateways.urls))
    assert len(expected) == REQUESTS
    gateways.stop()  # each flushes its queue on the way out

    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute(
            "SELECT request_id, status, route, endpoint, stream, local_completion_tokens "
            "FROM records"
        ).fetchall()
        versions = connection.execute("SELECT version FROM schema_version").fetchall()
    assert versions == [(SCHEMA_VERSION,)]
    outputs = gateways.outputs()
    # Both started on the new schema; exactly one of them created it.
    assert sum(f"from schema version 0 to {SCHEMA_VERSION}" in output for output in outputs) == 1
    # Both served (the access log: one JSON line per completion request).
    assert [sum(line.startswith("{") for line in o.splitlines()) for o in outputs] == [20, 20]
    counts = Counter(row[0] for row in rows)
    assert [rid for rid, count in counts.items() if count > 1] == []  # none doubled
    assert set(counts) == set(expected)  # none lost, none extra
    for request_id, status, route, endpoint, stream, completion_tokens in rows:
        assert Expected(status, route, endpoint, stream) == expected[request_id], request_id
        if status == 200:
            assert 0 < completion_tokens <= 4, request_id
        else:
            assert completion_tokens == 0, request_id

    # The summary of the shared ledger, as an operator reads it.
    report = subprocess.run(
        [str(SCRIPT), "report", "--since", "all", "--json"],
        env=_env(GATEWAY_LEDGER__URL=postgres_url),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert report.returncode == 0, report.stderr
    summary = json.loads(report.stdout)
    assert summary["requests"] == REQUESTS
    assert summary["by_route"] == {"local": 30, "cloud": 0, "local->cloud": 0, "none": 10}
    assert summary["by_status"] == {"200": 30, "404": 10}
