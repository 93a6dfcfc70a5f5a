"""What every ledger store does alike, run against SQLite and Postgres (the ``store`` fixture)."""

from __future__ import annotations

import pytest

from gateway.ledger.store import LedgerStore, LedgerStoreError, SQLiteStore
from tests.gateway.ledger.rows import costs, row
from tests.gateway.ledger.test_store import EVERY_FIELD_SET, NONES


async def test_round_trip_of_every_field(store: LedgerStore) -> None:
    await store.write([EVERY_FIELD_SET, NONES])
    assert await store.query() == [NONES, EVERY_FIELD_SET]  # oldest first


async def test_query_window_is_since_inclusive_until_exclusive(store: LedgerStore) -> None:
    await store.write([row(request_id=str(t), started_at=float(t)) for t in (300, 100, 200)])

    async def ids(**window: float) -> list[str]:
        return [r.record.request_id for r in await store.query(**window)]

    assert await ids() == ["100", "200", "300"]
    assert await ids(since=200) == ["200", "300"]
    assert await ids(until=300) == ["100", "200"]
    assert await ids(since=150, until=250) == ["200"]
    assert await ids(since=400) == []


async def test_a_failed_batch_writes_nothing(store: LedgerStore) -> None:
    bad = row(costs=costs(cloud_usd=None))  # NOT NULL column: the whole batch is refused
    refusal = "NOT NULL" if isinstance(store, SQLiteStore) else "not-null constraint"
    with pytest.raises(LedgerStoreError, match=refusal):
        await store.write([row(request_id="good"), bad])
    assert await store.query() == []
    await store.write([row(request_id="good")])  # Postgres: on a new connection
    assert [r.record.request_id for r in await store.query()] == ["good"]


async def test_closed_store_refuses_work(store: LedgerStore) -> None:
    await store.aclose()
    await store.aclose()  # twice is fine (the fixture closes it a third time)
    with pytest.raises(LedgerStoreError, match="closed"):
        await store.write([NONES])


async def test_a_large_batch_is_stored_whole_and_a_repeat_adds_nothing(store: LedgerStore) -> None:
    # More rows than one multi-row INSERT takes (SQLite: 50), and a remainder.
    batch = [row(request_id=f"r{i}", started_at=1000.0 + i, prompt_tokens=i) for i in range(123)]
    await store.write(batch)
    # The same rows again, as after a commit whose acknowledgement was lost: no copies.
    await store.write(batch[40:] + [row(request_id="new", started_at=2000.0)])
    stored = await store.query()
    assert stored == [*batch, stored[-1]]
    assert stored[-1].record.request_id == "new"
    assert [r.record.prompt_tokens for r in stored[:123]] == list(range(123))
