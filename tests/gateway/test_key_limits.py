"""Per-key limits: requests and tokens per minute, daily cloud budget, rebuilt after a restart."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from gateway import Settings, create_app
from gateway.auth.keys import hash_key, new_key
from gateway.auth.limits import DAY_S, KeyLimiter, KeyLimits, limits_per_key
from gateway.errors import RateLimitExceededError
from gateway.ledger.cost import Costs
from gateway.ledger.record import LedgerRecord
from gateway.ledger.store import LedgerStoreError, SQLiteStore, StoredRecord
from gateway.ledger.writer import Ledger
from gateway.settings import LedgerSettings
from tests.fakes import FakeCloud, FakeEngine

ALICE = new_key()
BOB = new_key()
# Mid-way through a UTC day: 11 days and 49,600 s after the epoch.
T0 = 1_000_000.0


class Clock:
    def __init__(self, now: float = T0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _record(
    key_id: str | None = "alice",
    started_at: float = T0,
    *,
    total_seconds: float = 1.0,
    local: tuple[int, int] = (0, 0),
    cloud: tuple[int, int] = (0, 0),
    status: int = 200,
    error: str | None = None,
) -> LedgerRecord:
    return LedgerRecord(
        request_id="r",
        started_at=started_at,
        endpoint="chat",
        model="hybrid",
        stream=False,
        status=status,
        error=error,
        route="local",
        reason="default",
        degraded=None,
        privacy_match=None,
        prompt_tokens=local[0],
        confidence=None,
        threshold=None,
        local_prompt_tokens=local[0],
        local_completion_tokens=local[1],
        local_seconds=0.0,
        local_queue_seconds=0.0,
        cloud_model="gpt-4o-mini" if any(cloud) else None,
        cloud_prompt_tokens=cloud[0],
        cloud_completion_tokens=cloud[1],
        cloud_seconds=0.0,
        cloud_attempts=1 if any(cloud) else 0,
        ttft_seconds=None,
        total_seconds=total_seconds,
        key_id=key_id,
    )


def _stored(record: LedgerRecord, cloud_usd: float = 0.0) -> StoredRecord:
    return StoredRecord(record, Costs(cloud_usd, 0.0, None, None, 0.0, 0.0))


def _refusal(limiter: KeyLimiter, key_id: str = "alice") -> RateLimitExceededError:
    with pytest.raises(RateLimitExceededError) as caught:
        limiter.admit(key_id)
    return caught.value


# --- the limiter, with a fake clock -------------------------------------------------


def test_requests_per_minute_is_a_sliding_window() -> None:
    clock = Clock()
    limiter = KeyLimiter({"alice": KeyLimits(requests_per_minute=3)}, clock=clock)
    for offset in (0, 10, 20):
        clock.now = T0 + offset
        limiter.admit("alice")
    clock.now = T0 + 30
    refused = _refusal(limiter)
    # the request of T0 leaves the window at T0 + 60
    assert refused.headers == {"Retry-After": "30"}
    assert refused.code == "rate_limit_exceeded" and refused.status_code == 429
    assert "3 requests per minute" in refused.message
    assert refused.body()["error"]["type"] == "rate_limit_error"
    # refusals do not count: once T0 has left, there is room again
    clock.now = T0 + 60.5
    limiter.admit("alice")
    clock.now = T0 + 61
    assert _refusal(limiter).headers == {"Retry-After": "9"}  # T0+10 leaves at T0+70
    assert limiter.usage("alice")[0] == 3


def test_tokens_per_minute_counts_finished_requests() -> None:
    clock = Clock()
    limiter = KeyLimiter({"alice": KeyLimits(tokens_per_minute=100)}, clock=clock)
    limiter.observe(_record(started_at=T0 - 1, local=(30, 20)), 0.0)  # finished at T0
    clock.now = T0 + 5
    limiter.admit("alice")  # 50 of 100
    limiter.observe(_record(started_at=T0 + 2, total_seconds=3, cloud=(40, 9)), 0.0)
    limiter.admit("alice")  # 99 of 100: room left, so admitted (its own size is unknown)
    limiter.observe(_record(started_at=T0 + 4, total_seconds=1, local=(1, 0)), 0.0)
    refused = _refusal(limiter)  # 100 of 100
    assert "100 tokens per minute (100 used)" in refused.message
    # dropping the 50 tokens that finished at T0 brings it under: at T0 + 60
    assert refused.headers == {"Retry-After": "55"}
    clock.now = T0 + 60.01
    limiter.admit("alice")
    assert limiter.usage("alice")[1] == 50


def test_daily_cloud_budget_resets_at_utc_midnight() -> None:
    clock = Clock()
    limiter = KeyLimiter({"alice": KeyLimits(daily_cloud_usd=0.01)}, clock=clock)
    limiter.observe(_record(), 0.006)
    assert limiter.budget_reset_in("alice") is None
    # a request that started yesterday is yesterday's spend, whenever it finished
    limiter.observe(_record(started_at=T0 - DAY_S), 0.5)
    assert limiter.budget_reset_in("alice") is None
    limiter.observe(_record(), 0.004)
    midnight = (T0 // DAY_S + 1) * DAY_S
    assert limiter.budget_reset_in("alice") == pytest.approx(midnight - T0)
    assert limiter.usage("alice")[2] == pytest.approx(0.01)
    # the minute limits do not apply: none is set
    limiter.admit("alice")
    clock.now = midnight + 1
    assert limiter.budget_reset_in("alice") is None
    assert limiter.usage("alice")[2] == 0.0


def test_keys_without_limits_are_never_limited() -> None:
    limiter = KeyLimiter({"alice": KeyLimits(requests_per_minute=1)}, clock=Clock())
    for _ in range(5):
        limiter.admit("bob")
    limiter.observe(_record("bob", cloud=(10**6, 10**6)), 100.0)
    limiter.observe(_record(None, local=(10**6, 0)), 0.0)
    assert limiter.budget_reset_in("bob") is None
    assert limiter.budget_reset_in(None) is None
    limiter.admit("alice")


def test_limits_per_key_take_the_defaults_unless_the_key_sets_its_own() -> None:
    settings = Settings(
        auth={
            "keys": [
                {"id": "alice", "hash": hash_key(ALICE), "requests_per_minute": 5},
                {"id": "bob", "hash": hash_key(BOB), "daily_cloud_usd": 0},
            ]
        },
        key_limits={"tokens_per_minute": 1000},
    )
    assert limits_per_key(settings) == {
        "alice": KeyLimits(requests_per_minute=5, tokens_per_minute=1000),
        "bob": KeyLimits(tokens_per_minute=1000, daily_cloud_usd=0.0),
    }
    unlimited = settings.model_copy(update={"key_limits": type(settings.key_limits)()})
    assert limits_per_key(unlimited) == {
        "alice": KeyLimits(requests_per_minute=5),
        "bob": KeyLimits(daily_cloud_usd=0.0),
    }
    nobody = unlimited.model_copy(update={"auth": type(settings.auth)()})
    assert limits_per_key(nobody) == {}


def test_restore_rebuilds_the_windows_and_the_day() -> None:
    clock = Clock()
    limiter = KeyLimiter(
        {"alice": KeyLimits(requests_per_minute=3, tokens_per_minute=1000, daily_cloud_usd=1.0)},
        clock=clock,
    )
    rows = [
        _stored(_record(started_at=T0 - DAY_S), 5.0),  # yesterday's spend
        _stored(_record(started_at=T0 - 600), 0.25),  # earlier today
        # started 90 s ago, finished 30 s ago: its tokens count, its start does not
        _stored(_record(started_at=T0 - 90, total_seconds=60, local=(100, 50)), 0.0),
        _stored(_record(started_at=T0 - 20, cloud=(7, 3)), 0.5),
        _stored(_record(started_at=T0 - 10, status=429, error="rate_limit_exceeded")),
        _stored(_record(started_at=T0 - 5, status=401, error="invalid_api_key")),
        _stored(_record("bob", started_at=T0 - 5, local=(999, 999)), 9.0),
    ]
    assert limiter.restore(rows) == 6
    requests, tokens, spent = limiter.usage("alice")
    # T0-20 and T0-5 (admitted, whatever their status); not the limiter's own refusal
    assert requests == 2
    assert tokens == 150 + 10 + 0
    assert spent == pytest.approx(0.75)
    limiter.admit("alice")
    assert _refusal(limiter).headers == {"Retry-After": "40"}


async def test_an_unreadable_ledger_leaves_the_counters_at_zero(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class BrokenStore:
        async def write(self, rows: Sequence[StoredRecord]) -> None:
            raise LedgerStoreError("down")

        async def query(
            self, *, since: float | None = None, until: float | None = None
        ) -> list[StoredRecord]:
            raise LedgerStoreError("ledger database is down")

        async def aclose(self) -> None:
            pass

    limiter = KeyLimiter({"alice": KeyLimits(requests_per_minute=1)}, clock=Clock())
    with caplog.at_level(logging.WARNING, logger="gateway.auth.limits"):
        await limiter.restore_from(BrokenStore())
    assert "start from zero" in caplog.text and "down" in caplog.text
    assert limiter.usage("alice") == (0, 0, 0.0)


# --- the gateway ----------------------------------------------------------------------

POLICY = """
version: 1
rules:
  - name: wants-cloud
    route: cloud
    match:
      keywords: [cloudplease]
default: local
on_budget_exhausted: {action}
"""


def _chat(text: str = "hello", model: str = "hybrid") -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": text}]}


def _as(key: str) -> dict[str, str]:
    return {"authorization": f"Bearer {key}"}


def _app(
    tmp_path: Path,
    cloud: FakeCloud,
    alice: dict[str, Any],
    *,
    action: str = "local_only",
    db: Path | None = None,
) -> TestClient:
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY.format(action=action))
    settings = Settings(
        auth={
            "disabled": False,
            "keys": [
                {"id": "alice", "hash": hash_key(ALICE), **alice},
                {"id": "bob", "hash": hash_key(BOB)},
            ],
        },
        policy={"file": policy},
        ledger={"path": db or tmp_path / "ledger.sqlite3"},
        cloud={"model": "gpt-4o-mini"},
    )
    engine = FakeEngine()
    return TestClient(
        create_app(settings, engine_factory=lambda _: engine, cloud_factory=lambda _: cloud)
    )


@pytest.fixture
def client(tmp_path: Path, cloud: FakeCloud) -> Iterator[TestClient]:
    with _app(tmp_path, cloud, {"requests_per_minute": 2}) as test_client:
        yield test_client


def test_over_the_request_limit_is_429_with_retry_after(client: TestClient) -> None:
    # a refused key does not use alice's allowance
    assert client.post("/v1/chat/completions", json=_chat()).status_code == 401
    for _ in range(2):
        assert client.post("/v1/chat/completions", json=_chat(), headers=_as(ALICE)).is_success
    refused = client.post(
        "/v1/chat/completions", json=_chat(), headers={**_as(ALICE), "x-request-id": "over"}
    )
    assert refused.status_code == 429
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-request-id"] == "over"
    error = refused.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert (error["code"], error["param"]) == ("rate_limit_exceeded", None)
    # bob has no limits; alice's other routes are not counted
    for _ in range(3):
        assert client.post("/v1/chat/completions", json=_chat(), headers=_as(BOB)).is_success
    assert client.get("/v1/models", headers=_as(ALICE)).status_code == 200
    usage = client.get("/v1/usage", params={"since": "all"}, headers=_as(ALICE)).json()
    assert usage["requests"] == 3
    assert usage["by_status"] == {"200": 2, "429": 1}


def test_over_the_token_limit_is_429(tmp_path: Path, cloud: FakeCloud) -> None:
    # the fake engine answers "Hello world": 3 prompt + 2 completion tokens
    with _app(tmp_path, cloud, {"tokens_per_minute": 5}) as client:
        assert client.post("/v1/chat/completions", json=_chat(), headers=_as(ALICE)).is_success
        refused = client.post("/v1/chat/completions", json=_chat(), headers=_as(ALICE))
        assert refused.status_code == 429
        assert "5 tokens per minute (5 used)" in refused.json()["error"]["message"]
        assert client.post("/v1/chat/completions", json=_chat(), headers=_as(BOB)).is_success


def test_spent_budget_answers_locally_marked_degraded(tmp_path: Path, cloud: FakeCloud) -> None:
    with _app(tmp_path, cloud, {"daily_cloud_usd": 0.000001}) as client:
        first = client.post("/v1/chat/completions", json=_chat("cloudplease"), headers=_as(ALICE))
        assert first.headers["x-hybrid-route"] == "cloud"
        # 11 + 2 cloud tokens at gpt-4o-mini prices: $2.85e-6, over the $1e-6 budget
        second = client.post("/v1/chat/completions", json=_chat("cloudplease"), headers=_as(ALICE))
        assert second.status_code == 200
        assert second.headers["x-hybrid-route"] == "local"
        assert second.headers["x-hybrid-reason"] == "wants-cloud"
        assert second.headers["x-hybrid-degraded"] == "budget-exhausted"
        assert second.json()["hybrid"]["degraded"] == "budget-exhausted"
        assert len(cloud.calls) == 1
        # a request that stays local anyway is not degraded
        local = client.post("/v1/chat/completions", json=_chat(), headers=_as(ALICE))
        assert "x-hybrid-degraded" not in local.headers
        # asking for the cloud by name: refused, never a silent local answer
        pinned = client.post("/v1/chat/completions", json=_chat(model="cloud"), headers=_as(ALICE))
        assert pinned.status_code == 429
        assert pinned.json()["error"]["code"] == "insufficient_quota"
        # bob's spend is his own
        other = client.post("/v1/chat/completions", json=_chat("cloudplease"), headers=_as(BOB))
        assert other.headers["x-hybrid-route"] == "cloud"
        assert len(cloud.calls) == 2


def test_spent_budget_with_reject_is_429(tmp_path: Path, cloud: FakeCloud) -> None:
    with _app(tmp_path, cloud, {"daily_cloud_usd": 0}, action="reject") as client:
        refused = client.post("/v1/chat/completions", json=_chat("cloudplease"), headers=_as(ALICE))
        assert refused.status_code == 429
        error = refused.json()["error"]
        assert (error["type"], error["code"]) == ("insufficient_quota", "insufficient_quota")
        assert 1 <= int(refused.headers["retry-after"]) <= DAY_S
        assert cloud.calls == []
        # local requests cost no cloud money: still served
        assert client.post("/v1/chat/completions", json=_chat(), headers=_as(ALICE)).is_success


def _write_records(db: Path, records: list[LedgerRecord]) -> None:
    async def write() -> None:
        ledger = Ledger(SQLiteStore(db), LedgerSettings(path=db), cloud_model="gpt-4o-mini")
        await ledger.start()
        for record in records:
            ledger.record(record)
        await ledger.aclose()

    asyncio.run(write())


def test_counters_survive_a_restart(tmp_path: Path, cloud: FakeCloud) -> None:
    db = tmp_path / "kept.sqlite3"
    now = time.time()
    _write_records(db, [_record(started_at=now - 2), _record(started_at=now - 1)])
    with _app(tmp_path, cloud, {"requests_per_minute": 2}, db=db) as client:
        refused = client.post("/v1/chat/completions", json=_chat(), headers=_as(ALICE))
        assert refused.status_code == 429
        assert refused.json()["error"]["code"] == "rate_limit_exceeded"
        assert client.post("/v1/chat/completions", json=_chat(), headers=_as(BOB)).is_success


def test_spend_survives_a_restart(tmp_path: Path, cloud: FakeCloud) -> None:
    db = tmp_path / "kept.sqlite3"
    # priced by the ledger at gpt-4o-mini list prices: $0.75 of cloud tokens today
    spent = _record(started_at=time.time() - 1, cloud=(1_000_000, 1_000_000))
    _write_records(db, [spent, dataclasses.replace(spent, key_id="bob")])
    with _app(tmp_path, cloud, {"daily_cloud_usd": 0.5}, db=db) as client:
        answer = client.post("/v1/chat/completions", json=_chat("cloudplease"), headers=_as(ALICE))
        assert answer.headers["x-hybrid-degraded"] == "budget-exhausted"
        assert cloud.calls == []
