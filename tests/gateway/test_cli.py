from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

SCRIPT = Path(sys.executable).with_name("hybrid-gateway")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(extra)
    return env


@pytest.mark.model
def test_serve_starts_the_gateway_on_the_embedded_model(tmp_path: Path) -> None:
    port = _free_port()
    process = subprocess.Popen(
        [str(SCRIPT), "serve", "--port", str(port), "--log-level", "warning"],
        env=_env(
            GATEWAY_LOCAL__N_CTX="512",
            GATEWAY_LEDGER__PATH=str(tmp_path / "l.sqlite3"),
            GATEWAY_AUTH__DISABLED="true",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, process.communicate()[1].decode()
            try:
                ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline
                time.sleep(0.1)
        assert ready.status_code == 200
        assert ready.json()["local"]["n_ctx"] == 512
        assert "Smollm2" in ready.json()["local"]["model"]
        answer = httpx.post(
            f"http://127.0.0.1:{port}/v1/completions",
            json={"model": "local", "prompt": "1, 2, 3,", "max_tokens": 3, "temperature": 0},
            headers={"x-request-id": "cli-test-1"},
            timeout=60,
        )
        assert answer.status_code == 200
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    # A graceful stop is a success: exit 0, not uvicorn's re-raised SIGTERM (-15).
    assert process.returncode == 0, stderr.decode()
    assert b"Traceback" not in stderr
    # one bare JSON access-log line for the completion
    lines = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    assert [line["request_id"] for line in lines] == ["cli-test-1"]
    assert lines[0]["route"] == "local" and lines[0]["local_completion_tokens"] == 3
    # the ledger was flushed on SIGTERM
    with sqlite3.connect(tmp_path / "l.sqlite3") as db:
        rows = db.execute("SELECT request_id, status FROM records").fetchall()
    db.close()
    assert rows == [("cli-test-1", 200)]


def test_serve_refuses_bad_settings_before_loading_anything() -> None:
    bad = subprocess.run(
        [str(SCRIPT), "serve"],
        env=_env(GATEWAY_LOCAL__N_CTX="tiny"),
        capture_output=True,
        timeout=60,
    )
    assert bad.returncode == 2
    assert b"local.n_ctx" in bad.stderr
    typo = subprocess.run(
        [str(SCRIPT), "serve"], env=_env(GATEWAY_PORT="1"), capture_output=True, timeout=60
    )
    assert typo.returncode == 2
    assert b"GATEWAY_PORT" in typo.stderr


def test_missing_model_file_fails_clearly(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            str(SCRIPT),
            "serve",
            "--port",
            str(_free_port()),
            "--model-path",
            str(tmp_path / "absent.gguf"),
        ],
        env=_env(),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"absent.gguf" in result.stderr
    assert b"Traceback" not in result.stderr


def test_bad_policy_file_stops_start_up_without_a_traceback(tmp_path: Path) -> None:
    policy = tmp_path / "bad.yaml"
    policy.write_text(
        "version: 1\nrules:\n  - name: x\n    route: cloud\n    match: {regex: '(oops'}\n"
    )
    result = subprocess.run(
        [str(SCRIPT), "serve", "--port", str(_free_port())],
        env=_env(GATEWAY_POLICY__FILE=str(policy)),
        capture_output=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert b"bad.yaml: rules[0].match.regex" in result.stderr
    assert b"Traceback" not in result.stderr
