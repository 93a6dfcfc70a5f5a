"""The `scale` profile run outside containers: migrate, two replicas, nginx, one Postgres ledger.

Each process gets its service's environment as docker-compose resolves it from
the example .env, with what only exists inside compose mapped to this machine:
the replicas' loopback ports for their fixed addresses, the policies directory
for its mount, and the tests' PostgreSQL server (a fresh schema) for the
`postgres` service. The commands are the services' own: `ledger-migrate`'s, and
the image's CMD (`hybrid-gateway serve`, see test_compose) for the replicas.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from gateway.auth.keys import hash_key, new_key
from gateway.ledger.store import TABLE
from tests.deploy.tools import GUARD_S, Compose, copy_deploy, free_port, running_nginx

BIN = Path(sys.executable).parent
IMAGE_CMD = ["hybrid-gateway", "serve"]
STARTUP_S = 120.0  # loading the model; a guard, not an assertion


def _outside_compose(
    service: dict[str, Any], *, password: str, ledger_url: str, key_hash: str
) -> dict[str, str]:
    env = {k: str(v) for k, v in service["environment"].items()}
    url = urlsplit(env["GATEWAY_LEDGER__URL"])
    assert (url.hostname, url.password) == ("postgres", password)
    env["GATEWAY_LEDGER__URL"] = ledger_url
    policy = PurePosixPath(env["GATEWAY_POLICY__FILE"])
    (mount,) = [v for v in service["volumes"] if v["target"] == str(policy.parent)]
    env["GATEWAY_POLICY__FILE"] = str(Path(mount["source"]) / policy.name)
    # the operator's client keys would come from .env; the example has none
    env["GATEWAY_AUTH__KEYS"] = json.dumps([{"id": "deploy-test", "hash": key_hash}])
    # two replicas and nginx share this machine's cores
    env.update(GATEWAY_LOCAL__N_CTX="512", GATEWAY_LOCAL__N_THREADS="1")
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return {**base, **env, "PATH": f"{BIN}{os.pathsep}{base.get('PATH', '')}"}


@contextlib.contextmanager
def _replica(env: dict[str, str], cwd: Path, log: Path) -> Iterator[str]:
    port = free_port()
    env = {**env, "GATEWAY_SERVER__HOST": "127.0.0.1", "GATEWAY_SERVER__PORT": str(port)}
    with log.open("wb") as stderr:
        process = subprocess.Popen(
            IMAGE_CMD, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=stderr
        )
    address = f"127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_S
        while True:
            assert process.poll() is None, log.read_text()
            try:
                httpx.get(f"http://{address}/healthz", timeout=2)
                break
            except httpx.TransportError:
                assert time.monotonic() < deadline, "a replica did not start"
                time.sleep(0.1)
        yield address
    finally:
        # SIGTERM, as `docker compose stop` sends: the ledger queue is flushed first
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=GUARD_S)
    # uvicorn re-raises the signal once it has shut down cleanly
    assert process.returncode == 0, log.read_text()
    assert "Traceback" not in log.read_text()


@pytest.mark.model
def test_scale_profile_shares_one_ledger(tmp_path: Path, postgres_url: str) -> None:
    password = secrets.token_hex(16)
    services = Compose(copy_deploy(tmp_path, {"POSTGRES_PASSWORD": password})).resolved("scale")[
        "services"
    ]
    key = new_key()
    env = {
        name: _outside_compose(
            services[name], password=password, ledger_url=postgres_url, key_hash=hash_key(key)
        )
        for name in ("ledger-migrate", "gateway-a", "gateway-b")
    }
    for name in ("gateway-a", "gateway-b"):
        assert "command" not in services[name], name  # the image's CMD

    migrate = subprocess.run(
        services["ledger-migrate"]["command"],
        env=env["ledger-migrate"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
    )
    assert migrate.returncode == 0, migrate.stderr
    assert "schema version before: 0" in migrate.stdout

    logs = {name: tmp_path / f"{name}.log" for name in ("gateway-a", "gateway-b")}
    sent = [f"scale-{i}" for i in range(8)]
    with contextlib.ExitStack() as stack:
        addresses = {
            name: stack.enter_context(_replica(env[name], tmp_path, logs[name]))
            for name in ("gateway-a", "gateway-b")
        }
        lb = stack.enter_context(running_nginx(tmp_path, list(addresses.values())))

        def ask(request_id: str) -> httpx.Response:
            return httpx.post(
                f"{lb.url}/v1/chat/completions",
                json={
                    "model": "hybrid",
                    "messages": [{"role": "user", "content": "Say hi."}],
                    "max_tokens": 4,
                    "stream": request_id.endswith(("1", "3")),
                },
                headers={"authorization": f"Bearer {key}", "x-request-id": request_id},
                timeout=GUARD_S,
            )

        with ThreadPoolExecutor(max_workers=4) as pool:
            answers = list(pool.map(ask, sent))
        for answer in answers:
            assert answer.status_code == 200, answer.text
        # a request without the key is refused by a replica, through nginx
        assert httpx.post(f"{lb.url}/v1/chat/completions", json={}).status_code == 401

    # every request once in the one ledger, whichever replica served it
    with psycopg.connect(postgres_url) as connection:
        rows = connection.execute(f"SELECT request_id FROM {TABLE}").fetchall()
    stored = sorted(request_id for (request_id,) in rows)
    assert [r for r in stored if r.startswith("scale-")] == sorted(sent)
    served = {entry["request_id"]: entry["upstream"] for entry in lb.access_log()}
    assert {served[r] for r in sent} == set(addresses.values())
    # the key and the database password appear in no log
    for text in [lb.log.read_text(), *(log.read_text() for log in logs.values())]:
        assert key not in text and password not in text
