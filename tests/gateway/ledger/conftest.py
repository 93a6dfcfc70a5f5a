from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import replace
from pathlib import Path

import pytest

from gateway.ledger.postgres import PostgresStore
from gateway.ledger.store import LedgerStore, SQLiteStore, StoredRecord
from tests.gateway.ledger.test_summary import ROWS

#: 2026-09-21T14:13:20Z; the sample rows are 10 minutes apart from here
T0 = 1_790_000_000.0


@pytest.fixture(params=["sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[LedgerStore]:
    """Each ledger backend in turn, empty (Postgres: a fresh schema, see tests/conftest.py)."""
    opened: LedgerStore
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "ledger.sqlite3")
    else:
        opened = PostgresStore(request.getfixturevalue("postgres_url"))
    try:
        yield opened
    finally:
        await opened.aclose()


def write_rows(path: Path, rows: Sequence[StoredRecord]) -> None:
    async def go() -> None:
        store = SQLiteStore(path)
        try:
            await store.write(rows)
            await store.query()  # creates the schema even when there is nothing to write
        finally:
            await store.aclose()

    asyncio.run(go())


def sample_rows(start: float = T0) -> list[StoredRecord]:
    return [
        replace(r, record=replace(r.record, request_id=f"s{i}", started_at=start + 600 * i))
        for i, r in enumerate(ROWS)
    ]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "ledger.sqlite3"
    write_rows(path, sample_rows())
    return path
