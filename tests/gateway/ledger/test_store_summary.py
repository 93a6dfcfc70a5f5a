"""``store.summarize`` (SQL) against ``summary.summarize`` (rows in memory), and ``store.scan``,
on SQLite and on the real PostgreSQL server."""

from __future__ import annotations

import contextlib
import random
import sqlite3
import tracemalloc
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger.store import PAGE_ROWS, LedgerStore, SQLiteStore, StoredRecord
from gateway.ledger.summary import ROUTES, percentile, summarize
from tests.gateway.ledger.rows import costs, row

T0 = 1_800_000_000.0
KEYS = (None, "alice", "bob", "carol")


def approx_sums(summary: dict[str, Any]) -> dict[str, Any]:
    """``summary`` with its money and energy sums as pytest.approx: a database adds the
    same floats in another order. Counts and percentiles stay exact."""
    expected = dict(summary)
    expected["cost_usd"] = {k: pytest.approx(v) for k, v in summary["cost_usd"].items()}
    if summary["energy"] is not None:
        energy = summary["energy"]
        expected["energy"] = {
            "wh": pytest.approx(energy["wh"]),
            "gco2e": pytest.approx(energy["gco2e"]),
            "requests": energy["requests"],
        }
    return expected


def random_rows(seed: int, count: int) -> list[StoredRecord]:
    """Varied rows over 1000 s from T0: every route and none, NULL TTFTs, energy estimates
    with and without CO2e, several keys, repeated latencies (ties) and repeated times."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        route = rng.choice([*ROUTES[:3], None])
        estimated = rng.random() < 0.6
        rows.append(
            row(
                costs(
                    cloud_usd=rng.random() / 100 if route in ("cloud", "local->cloud") else 0.0,
                    local_usd=rng.random() / 1000,
                    local_energy_wh=rng.random() if estimated else None,
                    local_gco2e=rng.choice([rng.random(), None]) if estimated else None,
                    counterfactual_usd=rng.random() / 100,
                    savings_usd=rng.uniform(-0.01, 0.01),
                ),
                request_id=f"r{n}",
                started_at=T0 + rng.randrange(1000) + rng.choice([0.0, 0.5]),
                status=rng.choice([200, 200, 200, 400, 499, 502]),
                route=route,
                reason=rng.choice(["default", "privacy-floor", "wants-cloud", None]),
                degraded=rng.choice([None, None, "cloud-unavailable"]),
                confidence=rng.choice([None, round(rng.uniform(-5, 0), 2)]),
                # refused before routing: never a first byte, so that route's TTFT is all NULL
                ttft_seconds=None if route is None else rng.choice([None, rng.randrange(20) / 10]),
                total_seconds=rng.randrange(100) / 10,
                local_prompt_tokens=rng.randrange(500),
                local_completion_tokens=rng.randrange(500),
                cloud_prompt_tokens=rng.randrange(500),
                cloud_completion_tokens=rng.randrange(500),
                key_id=rng.choice(KEYS),
            )
        )
    return rows


def in_window(
    rows: Sequence[StoredRecord], since: float | None, until: float | None, key_id: str | None
) -> list[StoredRecord]:
    return [
        r
        for r in rows
        if (since is None or r.record.started_at >= since)
        and (until is None or r.record.started_at < until)
        and (key_id is None or r.record.key_id == key_id)
    ]


WINDOWS = [
    (None, None),
    (T0 + 100, T0 + 600),
    (T0 + 250.5, None),  # a bound equal to some rows' time: since is inclusive
    (None, T0 + 700.5),  # until is exclusive
    (T0 + 2000, T0 + 3000),  # empty
]


@pytest.mark.parametrize("key_id", [None, "alice", "nobody"])
async def test_summary_in_the_database_is_the_summary_of_the_rows(
    store: LedgerStore, key_id: str | None
) -> None:
    rows = random_rows(seed=5, count=400)
    await store.write(rows)
    for since, until in WINDOWS:
        expected = summarize(in_window(rows, since, until, key_id), since=since, until=until)
        found = await store.summarize(since=since, until=until, key_id=key_id)
        assert found == approx_sums(expected), (since, until, key_id)
    everything = await store.summarize(since=None, until=None)
    assert everything["requests"] == 400
    assert everything["energy"]["requests"] == sum(
        r.costs.local_energy_wh is not None for r in rows
    )
    assert everything["latency"]["none"]["ttft_seconds"] == {"p50": None, "p95": None, "p99": None}
    assert list(everything) == list(summarize(rows, since=None, until=None))  # key order too


async def test_an_empty_ledger_and_window(store: LedgerStore) -> None:
    empty = summarize([], since=None, until=T0)
    assert await store.summarize(since=None, until=T0) == empty  # no table rows at all
    await store.write([row(started_at=T0 + 5)])
    assert await store.summarize(since=None, until=T0) == empty
    assert empty["latency"] == {} and empty["energy"] is None and empty["cost_usd"]["total"] == 0


async def test_one_row(store: LedgerStore) -> None:
    one = row(
        costs(cloud_usd=0.25, local_usd=0.5, local_energy_wh=2.0, local_gco2e=None),
        route="local->cloud",
        reason=None,
        status=502,
        ttft_seconds=None,
        total_seconds=3.5,
        local_prompt_tokens=7,
        key_id="alice",
    )
    await store.write([one])
    found = await store.summarize(since=None, until=None, key_id="alice")
    assert found == summarize([one], since=None, until=None)
    assert found["latency"] == {
        "local->cloud": {
            "count": 1,
            "ttft_seconds": {"p50": None, "p95": None, "p99": None},
            "total_seconds": {"p50": 3.5, "p95": 3.5, "p99": 3.5},
        }
    }
    assert (found["judged_locally"], found["escalated"], found["escalation_rate"]) == (1, 1, 1.0)
    assert found["by_reason"] == {"none": 1} and found["by_status"] == {"502": 1}
    assert found["cost_usd"]["total"] == 0.75
    assert found["energy"] == {"wh": 2.0, "gco2e": 0.0, "requests": 1}
    assert (await store.summarize(since=None, until=None, key_id="bob"))["requests"] == 0


async def test_nearest_rank_percentiles_per_route(store: LedgerStore) -> None:
    """The exact ranks: 10 values give p95 = p99 = the largest, 100 give the 95th and 99th."""
    ten = [float(v) for v in range(10, 0, -1)]
    hundred = [float(v) for v in range(100, 0, -1)]
    await store.write(
        [row(route="cloud", total_seconds=v, ttft_seconds=v / 10) for v in ten]
        + [row(route="local", total_seconds=v, ttft_seconds=None) for v in hundred]
        + [row(route="local", total_seconds=1000.0, ttft_seconds=None, key_id="k")]
    )
    latency = (await store.summarize(since=None, until=None))["latency"]
    assert latency["cloud"] == {
        "count": 10,
        "ttft_seconds": {"p50": 0.5, "p95": 1.0, "p99": 1.0},
        "total_seconds": {"p50": 5.0, "p95": 10.0, "p99": 10.0},
    }
    assert latency["local"]["count"] == 101
    # 101 values: ranks 51, 96 and 100 (ceil of 50.5, 95.95, 99.99)
    assert latency["local"]["total_seconds"] == {"p50": 51.0, "p95": 96.0, "p99": 100.0}
    assert latency["local"]["ttft_seconds"] == {"p50": None, "p95": None, "p99": None}
    own = (await store.summarize(since=None, until=None, key_id="k"))["latency"]
    assert own == {
        "local": {
            "count": 1,
            "ttft_seconds": {"p50": None, "p95": None, "p99": None},
            "total_seconds": {"p50": 1000.0, "p95": 1000.0, "p99": 1000.0},
        }
    }


async def test_scan_reads_the_window_a_page_at_a_time(store: LedgerStore) -> None:
    # More than two pages, with many rows sharing a time across the page boundaries.
    rows = [
        row(request_id=f"r{n}", started_at=T0 + n // 700, total_seconds=float(n))
        for n in range(2 * PAGE_ROWS + 7)
    ]
    await store.write(random.Random(1).sample(rows, len(rows)))
    scanned = [r async for r in store.scan()]
    assert scanned == await store.query()
    times = [r.record.started_at for r in scanned]
    assert times == sorted(times)
    assert {r.record.request_id for r in scanned} == {r.record.request_id for r in rows}
    window = [r async for r in store.scan(since=T0 + 1, until=T0 + 3)]
    assert window == await store.query(since=T0 + 1, until=T0 + 3)
    assert {r.record.request_id for r in window} == {f"r{n}" for n in range(700, len(rows))}
    assert [r async for r in store.scan(since=T0 + 100)] == []


async def test_a_client_key_reads_through_its_index(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path)
    try:
        await store.write([row(key_id="alice")])
    finally:
        await store.aclose()
    from gateway.ledger.store import tally_query, window_clause

    where, args = window_clause(T0, T0 + 60, "?", key_id="alice")
    with contextlib.closing(sqlite3.connect(path)) as connection:
        plan = connection.execute(f"EXPLAIN QUERY PLAN {tally_query(where)}", args).fetchall()
    assert any("records_key_id_started_at" in str(step) for step in plan), plan


ROWS_FOR_MEMORY = 100_000


def _fill(path: Path, count: int) -> None:
    """``count`` rows straight in SQL (fast), one a second from T0, all routes, all keys."""
    routes = "CASE i % 4 WHEN 0 THEN 'local' WHEN 1 THEN 'cloud' WHEN 2 THEN 'local->cloud' END"
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute(
            "WITH RECURSIVE n(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM n WHERE i + 1 < ?) "
            "INSERT INTO records (request_id, started_at, endpoint, model, stream, status, "
            "route, reason, confidence, local_prompt_tokens, local_completion_tokens, "
            "local_seconds, local_queue_seconds, cloud_prompt_tokens, cloud_completion_tokens, "
            "cloud_seconds, cloud_attempts, ttft_seconds, total_seconds, key_id, cloud_usd, "
            "local_usd, local_energy_wh, local_gco2e, counterfactual_usd, savings_usd) "
            f"SELECT 'r' || i, ? + i, 'chat', 'hybrid', 0, 200, {routes}, 'default', "
            "CASE WHEN i % 3 = 0 THEN -1.5 END, 10, 20, 0.5, 0.0, 30, 40, 1.0, 1, "
            "(i % 1000) / 1000.0, (i % 997) / 100.0, 'key-' || (i % 10), 0.001, 0.0005, "
            "0.01, 0.004, 0.002, 0.0005 FROM n",
            (count, T0),
        )


async def test_summarizing_many_rows_does_not_load_them(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path)
    try:
        await store.migrate()
        _fill(path, ROWS_FOR_MEMORY)
        await store.summarize(since=None, until=T0)  # connection and statements warmed up
        tracemalloc.start()
        try:
            summary = await store.summarize(since=None, until=None)
            summarizing = tracemalloc.get_traced_memory()[1]
            tracemalloc.reset_peak()
            rows = await store.query(until=T0 + ROWS_FOR_MEMORY // 20)
            loading_a_twentieth = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
    finally:
        await store.aclose()
    assert summary["requests"] == ROWS_FOR_MEMORY and len(rows) == ROWS_FOR_MEMORY // 20
    quarter = ROWS_FOR_MEMORY // 4
    assert summary["by_route"] == {"local": quarter, "cloud": quarter, "local->cloud": quarter} | {
        "none": quarter
    }
    local_totals = [(i % 997) / 100 for i in range(0, ROWS_FOR_MEMORY, 4)]
    assert summary["latency"]["local"]["total_seconds"] == {
        f"p{p}": percentile(local_totals, p) for p in (50, 95, 99)
    }
    assert summary["tokens"]["cloud_completion"] == 40 * ROWS_FOR_MEMORY
    assert summarizing < 5_000_000, f"summarizing peaked at {summarizing} bytes"
    # Loading 5% of the rows already takes more than summarizing all of them.
    assert loading_a_twentieth > 2 * summarizing, (loading_a_twentieth, summarizing)
