"""The whole app with GATEWAY_LEDGER__URL: records reach Postgres, /v1/usage reads them,
and a database that is away costs no answer."""

from __future__ import annotations

import getpass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
import pytest
from fastapi.testclient import TestClient

from gateway import Settings, create_app
from tests.fakes import FakeEngine
from tests.pg import ProxyThread

PASSWORD = "s3cret-Pa55"
CHAT = {"model": "hybrid", "messages": [{"role": "user", "content": "hello"}]}


def _rows(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as connection:
        return connection.execute(
            "SELECT request_id, status, route, local_completion_tokens FROM records ORDER BY id"
        ).fetchall()


def test_records_go_to_postgres_and_usage_reads_them(postgres_url: str) -> None:
    settings = Settings(ledger={"url": postgres_url})
    app = create_app(settings, engine_factory=lambda _: FakeEngine())
    with TestClient(app) as client:
        answer = client.post("/v1/chat/completions", json=CHAT, headers={"x-request-id": "pg-1"})
        assert answer.status_code == 200
        refused = client.post("/v1/chat/completions", json={**CHAT, "model": "gpt-9"})
        assert refused.status_code == 404
        usage = client.get("/v1/usage", params={"since": "all"})
        assert usage.status_code == 200, usage.text
        # The refused request's record may still be on its way; the answered one is in.
        assert usage.json()["by_route"]["local"] == 1
    # Shut down: everything flushed.
    rows = _rows(postgres_url)
    assert [(r[1], r[2]) for r in rows] == [(200, "local"), (404, None)]
    assert rows[0][0] == "pg-1" and rows[0][3] == 2  # the fake's two tokens


def test_serving_goes_on_while_the_database_is_away(
    postgres_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    relay = ProxyThread(postgres_url)  # the database as the gateway sees it: away at first
    parts = urlsplit(relay.proxy.url_for(postgres_url))
    user = parts.username or getpass.getuser()
    # A password the test server's trust authentication ignores, to check it never shows.
    netloc = f"{user}:{PASSWORD}@{parts.netloc.rpartition('@')[2]}"
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    settings = Settings(ledger={"url": url})
    app = create_app(settings, engine_factory=lambda _: FakeEngine())
    try:
        with TestClient(app) as client:
            for n in range(3):
                headers = {"x-request-id": f"away-{n}"}
                answer = client.post("/v1/chat/completions", json=CHAT, headers=headers)
                assert answer.status_code == 200
            usage = client.get("/v1/usage")
            assert usage.status_code == 503
            assert usage.json()["error"]["code"] == "ledger_unavailable"
            assert client.get("/readyz").status_code == 200

            relay.start()  # back: the queued records are written, nothing was lost
            usage = client.get("/v1/usage")
            assert usage.status_code == 200, usage.text
            assert usage.json()["requests"] == 3
    finally:
        relay.close()
    assert [r[0] for r in _rows(postgres_url)] == ["away-0", "away-1", "away-2"]
    # The failures were logged, with the URL's password masked.
    assert f"postgresql://{user}:***@127.0.0.1:{relay.proxy.port}/" in caplog.text
    assert PASSWORD not in caplog.text
