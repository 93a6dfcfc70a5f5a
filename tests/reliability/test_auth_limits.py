"""Authentication and per-key limits on ``hybrid-gateway serve``, across a restart.

Keys are made the way an operator makes them (``hybrid-gateway keys create``
prints the key once and the hash the settings take); the gateway gets only the
hashes. A burst from one key over its requests-per-minute limit must be cut at
exactly the limit, the rest refused with 429 and ``Retry-After``; bad and
missing keys get 401; ``/metrics`` needs the admin key. The counters live in
the ledger: a restarted gateway still refuses the key within the same minute.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import Results
from tests.reliability.harness import GatewayProcess
from tests.reliability.load import Answer, send

pytestmark = pytest.mark.model

LIMIT = 5
BURST = 20


def _create_key(*args: str) -> tuple[str, str]:
    """(key, hash) from the real CLI."""
    out = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "keys", "create", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    key = next(word for word in out.split() if word.startswith("hgw_"))
    digest = next(word.strip("\",'{}") for word in out.split() if "sha256:" in word)
    return key, digest[digest.index("sha256:") :]


def _burst(url: str, key: str) -> list[int]:
    """BURST concurrent completions with one key; the statuses, 429s checked."""
    answers = asyncio.run(_send_all_with_key(url, key))
    for answer in answers:
        if answer.status == 429:
            assert answer.error_code == "rate_limit_exceeded", answer.body
            assert 1 <= int(answer.headers["retry-after"]) <= 60, answer.headers
    return [answer.status for answer in answers]


async def _send_all_with_key(url: str, key: str) -> list[Answer]:
    body = {"model": "local", "prompt": "1, 2, 3,", "max_tokens": 2, "temperature": 0}
    limits = httpx.Limits(max_connections=BURST + 1)
    headers = {"authorization": f"Bearer {key}"}
    async with httpx.AsyncClient(base_url=url, headers=headers, limits=limits, timeout=300) as c:
        return list(await asyncio.gather(*(send(c, "/v1/completions", body) for _ in range(BURST))))


def _counts(statuses: list[int]) -> dict[str, int]:
    return {str(status): statuses.count(status) for status in sorted(set(statuses))}


def test_keys_and_request_limits_hold_across_a_restart(tmp_path: Path, results: Results) -> None:
    alice, alice_hash = _create_key("--id", "alice")
    bob, bob_hash = _create_key("--id", "bob")
    admin, admin_hash = _create_key("--admin")
    env = {
        "GATEWAY_AUTH__DISABLED": "false",
        "GATEWAY_AUTH__KEYS": json.dumps(
            [
                {"id": "alice", "hash": alice_hash, "requests_per_minute": LIMIT},
                {"id": "bob", "hash": bob_hash},
            ]
        ),
        "GATEWAY_AUTH__ADMIN_KEY_HASH": admin_hash,
    }
    workdir = tmp_path / "gw"
    with GatewayProcess(workdir, env, name="auth") as gateway:
        statuses = _burst(gateway.url, alice)
        assert statuses.count(200) == LIMIT, statuses
        assert statuses.count(429) == BURST - LIMIT, statuses
        # Another key is not affected by alice's limit (only the local queue may refuse some).
        others = _burst(gateway.url, bob)
        assert 429 not in others and others.count(200) > LIMIT, others
        bad = httpx.get(
            f"{gateway.url}/v1/models", headers={"authorization": "Bearer hgw_wrong"}, timeout=30
        )
        missing = httpx.get(f"{gateway.url}/v1/models", timeout=30)
        assert bad.status_code == missing.status_code == 401
        assert bad.json()["error"]["code"] == "invalid_api_key"
        assert bad.headers["www-authenticate"].lower().startswith("bearer")
        as_client = httpx.get(
            f"{gateway.url}/metrics", headers={"authorization": f"Bearer {alice}"}, timeout=30
        )
        as_admin = httpx.get(
            f"{gateway.url}/metrics", headers={"authorization": f"Bearer {admin}"}, timeout=30
        )
        assert as_client.status_code in (401, 403)
        assert as_admin.status_code == 200 and "gateway_" in as_admin.text
        rows_before = gateway.ledger_rows()
    # Restarted on the same ledger within the minute: alice is still over her limit.
    with GatewayProcess(workdir, env, name="auth-restarted") as restarted:
        after = _burst(restarted.url, alice)
        assert after.count(200) == 0, after
        log = restarted.log()
    by_key = {row["key_id"] for row in rows_before}
    assert {"alice", "bob"} <= by_key
    for secret in (alice, bob, admin):
        assert secret not in log
        assert secret not in json.dumps(rows_before)
    results.record(
        "auth and per-key limits",
        burst=BURST,
        limit=LIMIT,
        first_run=_counts(statuses),
        after_restart=_counts(after),
    )
