"""/v1/usage on a minimal app, and its agreement with ``hybrid-gateway report``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from gateway.errors import install_error_handlers
from gateway.ledger.record import LedgerRecord
from gateway.ledger.report import iso
from gateway.ledger.store import SQLiteStore
from gateway.ledger.writer import Ledger
from gateway.routes import usage
from gateway.settings import LedgerSettings
from tests.gateway.ledger.conftest import T0, sample_rows, write_rows
from tests.gateway.ledger.rows import record


def _app(db: Path | None, queued: Sequence[LedgerRecord] = ()) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ledger = None
        if db is not None:
            # A long interval: only the endpoint's own flush can write the queued records.
            settings = LedgerSettings(path=db, flush_interval_s=60)
            ledger = Ledger(SQLiteStore(db), settings, cloud_model="gpt-4o-mini")
            await ledger.start()
            for r in queued:
                ledger.record(r)
        app.state.ledger = ledger
        yield
        if ledger is not None:
            await ledger.aclose()

    async def ledger_of(request: Request) -> Ledger | None:
        ledger: Ledger | None = request.app.state.ledger
        return ledger

    app = FastAPI(lifespan=lifespan)
    install_error_handlers(app)
    app.include_router(usage.router)
    app.dependency_overrides[usage.get_ledger] = ledger_of
    return app


def _report(db: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "report", "--db", str(db), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_usage_includes_records_queued_a_moment_ago_and_agrees_with_report(db: Path) -> None:
    queued = [
        record(request_id="q1", started_at=T0 + 10_000, route="cloud", total_seconds=1.0),
        record(request_id="q2", started_at=T0 + 10_001, route="local", total_seconds=2.0),
    ]
    window = {"since": iso(T0 + 600, ""), "until": iso(T0 + 3000, "")}
    with TestClient(_app(db, queued)) as client:
        everything = client.get("/v1/usage", params={"since": "all"})
        windowed = client.get("/v1/usage", params=window)
    assert everything.status_code == 200, everything.text
    assert everything.json()["requests"] == 8
    assert everything.json()["by_route"] == {"local": 4, "cloud": 2, "local->cloud": 1, "none": 1}
    assert windowed.status_code == 200
    body: dict[str, Any] = windowed.json()
    assert body["requests"] == 4  # rows at +600, +1200, +1800, +2400
    assert (body["since"], body["until"]) == (T0 + 600, T0 + 3000)

    reported = _report(db, "--since", window["since"], "--until", window["until"], "--json")
    assert reported.returncode == 0, reported.stderr
    assert json.loads(reported.stdout) == body
    reported_all = _report(db, "--since", "all", "--json")
    assert json.loads(reported_all.stdout) == everything.json()

    table = _report(db, "--since", window["since"], "--until", window["until"])
    assert table.returncode == 0, table.stderr
    assert "requests: 4   degraded: 0   escalation rate: 100.0% (1 of 1 judged locally)" in (
        table.stdout
    )
    cost = body["cost_usd"]
    for key in ("cloud", "local_estimate", "total", "all_cloud_counterfactual", "savings"):
        assert f"{cost[key]:.6f}" in table.stdout


def test_default_window_is_the_last_24_hours(tmp_path: Path) -> None:
    db = tmp_path / "ledger.sqlite3"
    now = time.time()
    write_rows(db, sample_rows(start=now - 48 * 3600)[:1] + sample_rows(start=now - 3600)[:2])
    with TestClient(_app(db)) as client:
        response = client.get("/v1/usage")
    assert response.status_code == 200
    assert response.json()["requests"] == 2
    assert response.json()["until"] is None


def test_bad_window_is_a_400_naming_the_parameter(db: Path) -> None:
    with TestClient(_app(db)) as client:
        since = client.get("/v1/usage", params={"since": "yesterday"})
        until = client.get("/v1/usage", params={"until": "soon"})
    assert since.status_code == 400
    error = since.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", "since")
    assert "yesterday" in error["message"]
    assert until.status_code == 400
    assert until.json()["error"]["param"] == "until"


def test_disabled_ledger_is_a_404_that_says_so() -> None:
    with TestClient(_app(None)) as client:
        response = client.get("/v1/usage")
    assert response.status_code == 404
    error = response.json()["error"]
    assert "GATEWAY_LEDGER__ENABLED=false" in error["message"]
    assert error["type"] == "invalid_request_error"


def test_unreadable_ledger_is_a_503(tmp_path: Path) -> None:
    with TestClient(_app(tmp_path)) as client:  # a directory, not a database
        response = client.get("/v1/usage")
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "ledger_unavailable"
    assert response.headers["retry-after"] == "5"
