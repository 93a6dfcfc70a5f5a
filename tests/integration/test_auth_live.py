"""Authentication end to end: a key made by the CLI, the OpenAI SDK, uvicorn, the real model."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import httpx
import openai
import pytest

from gateway import Settings, create_app
from gateway.app import load_llama_engine
from gateway.cli import main
from tests.integration.conftest import ServerThread

pytestmark = pytest.mark.model

QUESTION = [{"role": "user", "content": "Say hi"}]


def _create(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[str, str]:
    """Run ``hybrid-gateway keys create``: (the key, its settings line)."""
    assert main(["keys", "create", *args]) == 0
    key, line = [x for x in capsys.readouterr().out.splitlines() if not x.startswith("#")]
    return key, line


def test_keys_from_the_cli_with_the_openai_sdk(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    key, entry = _create(capsys, "--id", "alice")
    admin_key, admin_line = _create(capsys, "--admin")
    wrong_key = key[:-4] + "XXXX"  # a canary too: close to the real one
    canaries = (key, admin_key, wrong_key)
    db = tmp_path / "ledger.sqlite3"
    settings = Settings(
        auth={
            "disabled": False,
            "keys": [json.loads(entry)],
            "admin_key_hash": admin_line.split("=", 1)[1],
        },
        local={"n_ctx": 512},
        ledger={"path": db},
    )
    caplog.set_level(logging.DEBUG)
    with ServerThread(create_app(settings, engine_factory=load_llama_engine)) as server:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=key, max_retries=0) as sdk:
            raw = sdk.chat.completions.with_raw_response.create(
                model="hybrid",
                messages=QUESTION,  # type: ignore[arg-type]
                max_tokens=4,
                temperature=0,
                extra_headers={"x-request-id": "live-good"},
            )
            assert raw.parse().choices[0].message.content
            streamed = sdk.chat.completions.create(
                model="hybrid",
                messages=QUESTION,  # type: ignore[arg-type]
                max_tokens=4,
                stream=True,
                extra_headers={"x-request-id": "live-stream"},
            )
            assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key=wrong_key, max_retries=0) as bad:
            with pytest.raises(openai.AuthenticationError) as refused:
                bad.chat.completions.create(
                    model="hybrid",
                    messages=QUESTION,  # type: ignore[arg-type]
                    extra_headers={"x-request-id": "live-bad"},
                )
        assert refused.value.status_code == 401
        assert refused.value.code == "invalid_api_key"
        bodies = [refused.value.response.text]
        with httpx.Client(base_url=server.url, timeout=30) as http:
            missing = http.post(
                "/v1/chat/completions",
                json={"model": "hybrid", "messages": QUESTION},
                headers={"x-request-id": "live-missing"},
            )
            assert missing.status_code == 401
            assert missing.headers["www-authenticate"] == "Bearer"
            bodies.append(missing.text)
            assert http.get("/metrics").status_code == 401
            assert http.get("/metrics", headers={"authorization": f"Bearer {key}"}).is_error
            metrics = http.get("/metrics", headers={"authorization": f"Bearer {admin_key}"})
            assert metrics.status_code == 200
            assert "hybrid_gateway_requests_total" in metrics.text
            assert http.get("/healthz").status_code == 200
    # the server has stopped: the ledger is flushed
    with sqlite3.connect(db) as connection:
        connection.row_factory = sqlite3.Row
        rows = {r["request_id"]: dict(r) for r in connection.execute("SELECT * FROM records")}
    connection.close()
    assert rows["live-good"]["key_id"] == "alice" and rows["live-good"]["status"] == 200
    assert rows["live-stream"]["key_id"] == "alice" and rows["live-stream"]["stream"] == 1
    for refused_id in ("live-bad", "live-missing"):
        assert rows[refused_id]["key_id"] is None
        assert (rows[refused_id]["status"], rows[refused_id]["error"]) == (401, "invalid_api_key")
    access = [json.loads(r.getMessage()) for r in caplog.records if r.name == "gateway.access"]
    assert {line["request_id"]: line["key_id"] for line in access}["live-good"] == "alice"
    assert any(r.levelno == logging.DEBUG for r in caplog.records)  # DEBUG really was on
    everything = "\n".join([caplog.text, metrics.text, *bodies, json.dumps(list(rows.values()))])
    for canary in canaries:
        assert canary not in everything
