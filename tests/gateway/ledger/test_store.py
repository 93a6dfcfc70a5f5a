from __future__ import annotations

import contextlib
import shutil
import sqlite3
import time
from dataclasses import fields
from pathlib import Path

import pytest

from gateway.ledger.cost import Costs
from gateway.ledger.record import LedgerRecord
from gateway.ledger.store import (
    COLUMN_NAMES,
    SCHEMA_VERSION,
    LedgerStoreError,
    Migration,
    SQLiteStore,
    StoredRecord,
    new_uid,
    register_fast_adapters,
)
from tests.gateway.ledger.rows import costs, row

EVERY_FIELD_SET = StoredRecord(
    LedgerRecord(
        request_id="req-full",
        started_at=1_800_000_123.456789,
        endpoint="text",
        model="gpt-4o-mini",
        stream=True,
        status=200,
        error=None,
        route="local->cloud",
        reason="default",
        degraded="cloud-error",
        privacy_match="email",
        prompt_tokens=42,
        confidence=-3.25,
        threshold=-3.0,
        local_prompt_tokens=40,
        local_completion_tokens=7,
        local_seconds=0.123456,
        local_queue_seconds=0.5,
        cloud_model="gpt-4o",
        cloud_prompt_tokens=45,
        cloud_completion_tokens=99,
        cloud_seconds=1.75,
        cloud_attempts=2,
        ttft_seconds=0.333,
        total_seconds=2.5,
        key_id="key-7",
        prompt_text="user: mail [email]",
        completion_text="done",
    ),
    Costs(
        cloud_usd=0.0011025,
        local_usd=1.7e-6,
        local_energy_wh=0.001,
        local_gco2e=0.0004,
        counterfactual_usd=0.0011025,
        savings_usd=-1.7e-6,
    ),
)
NONES = row(
    route=None,
    reason=None,
    status=499,
    error="client_disconnected",
    endpoint="chat",
    model="",
    stream=False,
)

#: every index of the current schema, in both backends
INDEXES = {
    "records_started_at",
    "records_record_uid",
    "records_key_id_started_at",
}


def _pragma(path: Path, name: str) -> object:
    with contextlib.closing(sqlite3.connect(path)) as connection:
        return connection.execute(f"PRAGMA {name}").fetchone()[0]


def test_columns_are_every_record_and_cost_field() -> None:
    expected = [f.name for f in fields(LedgerRecord)] + [f.name for f in fields(Costs)]
    assert list(COLUMN_NAMES) == expected


async def test_wal_journal(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path)
    try:
        await store.write([NONES])
    finally:
        await store.aclose()
    assert _pragma(path, "journal_mode") == "wal"


async def test_schema_creation_is_idempotent(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    for n in range(2):
        store = SQLiteStore(path)
        try:
            await store.write([row(request_id=f"req-{n}")])
            assert [r.record.request_id for r in await store.query()] == ["req-0", "req-1"][: n + 1]
        finally:
            await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)
        ]
        indexes = {r[1] for r in connection.execute("PRAGMA index_list(records)")}
    assert indexes == INDEXES


async def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path)
    await store.write([NONES])
    await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        connection.execute("UPDATE schema_version SET version = 99")
    store = SQLiteStore(path)
    try:
        with pytest.raises(LedgerStoreError, match="schema version 99"):
            await store.query()
    finally:
        await store.aclose()


async def test_unwritable_path_raises_a_store_error(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path)  # a directory
    try:
        with pytest.raises(LedgerStoreError, match="unable to open"):
            await store.write([NONES])
    finally:
        await store.aclose()


async def test_a_removed_directory_fails_writes_until_it_is_back(tmp_path: Path) -> None:
    """The open connection would otherwise write on into the deleted file, losing it all."""
    directory = tmp_path / "ledger"
    directory.mkdir()
    store = SQLiteStore(directory / "ledger.sqlite3")
    try:
        await store.write([row(request_id="gone with the directory")])
        shutil.rmtree(directory)
        with pytest.raises(LedgerStoreError, match="unable to open"):
            await store.write([row(request_id="kept by the writer")])
        directory.mkdir()
        await store.write([row(request_id="kept by the writer")])
        assert [r.record.request_id for r in await store.query()] == ["kept by the writer"]
    finally:
        await store.aclose()


async def test_a_version_1_ledger_is_upgraded_in_place(tmp_path: Path) -> None:
    """Version 2 adds each row's writer id; rows written before keep theirs empty."""
    from gateway.ledger.store import MIGRATIONS, row_params

    path = tmp_path / "ledger.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        for statement in MIGRATIONS[0]:
            connection.execute(statement)
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (1)")
        old = row_params(EVERY_FIELD_SET)[: len(COLUMN_NAMES)]  # no uid column in version 1
        marks = ", ".join("?" for _ in COLUMN_NAMES)
        connection.execute(f"INSERT INTO records ({', '.join(COLUMN_NAMES)}) VALUES ({marks})", old)
    store = SQLiteStore(path)
    try:
        assert await store.migrate() == Migration(1, SCHEMA_VERSION)
        await store.write([NONES])
        rows = await store.query()
        assert len(rows) == 2 and EVERY_FIELD_SET in rows and NONES in rows
    finally:
        await store.aclose()


async def test_a_version_2_ledger_gets_the_client_key_index(tmp_path: Path) -> None:
    """Version 3 indexes (key_id, started_at) for a client key's /v1/usage."""
    from gateway.ledger.store import MIGRATIONS

    path = tmp_path / "ledger.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
            connection.execute(statement)
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (2)")
    store = SQLiteStore(path)
    try:
        await store.write([EVERY_FIELD_SET])  # opening it migrates
        assert await store.migrate() == Migration(SCHEMA_VERSION, SCHEMA_VERSION)
        found = await store.summarize(since=None, until=None, key_id="key-7")
    finally:
        await store.aclose()
    assert found["requests"] == 1 and found["by_route"]["local->cloud"] == 1
    with contextlib.closing(sqlite3.connect(path)) as connection:
        indexes = {r[1] for r in connection.execute("PRAGMA index_list(records)")}
    assert "records_key_id_started_at" in indexes


async def test_a_version_3_ledger_loses_the_route_index_nothing_reads(tmp_path: Path) -> None:
    from gateway.ledger.store import MIGRATIONS

    path = tmp_path / "ledger.sqlite3"
    with contextlib.closing(sqlite3.connect(path)) as connection, connection:
        for statement in (*MIGRATIONS[0], *MIGRATIONS[1], *MIGRATIONS[2]):
            connection.execute(statement)
        connection.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        connection.execute("INSERT INTO schema_version VALUES (3)")
        before = {r[1] for r in connection.execute("PRAGMA index_list(records)")}
    assert "records_route_started_at" in before
    store = SQLiteStore(path)
    try:
        assert await store.migrate() == Migration(3, SCHEMA_VERSION)
    finally:
        await store.aclose()
    with contextlib.closing(sqlite3.connect(path)) as connection:
        indexes = {r[1] for r in connection.execute("PRAGMA index_list(records)")}
    assert indexes == INDEXES


def test_uids_are_unique_and_sort_in_creation_order() -> None:
    # Time-ordered keys append to the unique index instead of dirtying a random page
    # per row (bench/ledger_store.py). Within one millisecond the order is random.
    made = []
    for _ in range(5):
        made.append(new_uid())
        time.sleep(0.002)
    assert sorted(made) == made
    many = [new_uid() for _ in range(10_000)]
    assert len(set(many)) == len(many)
    assert all(len(uid) == 32 and int(uid, 16) >= 0 for uid in many)


def test_fast_adapters_bind_what_sqlite3_binds() -> None:
    register_fast_adapters()
    connection = sqlite3.connect(":memory:")
    try:
        found = connection.execute(
            "SELECT ?, ?, ?, typeof(?), typeof(?), ?", (None, True, False, None, True, 7)
        ).fetchone()
    finally:
        connection.close()
    assert found == (None, 1, 0, "null", "integer", 7)


async def test_inserts_fit_a_low_limit_on_sql_parameters(tmp_path: Path) -> None:
    """SQLite before 3.32 allows 999 parameters per statement: fewer rows per INSERT."""
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    try:
        await store.migrate()
        # on the store's own connection, on its thread
        limit = sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER
        await store._run(lambda: store._connect().setlimit(limit, 999))
        batch = [row(request_id=f"r{i}", started_at=1000.0 + i) for i in range(60)]
        await store.write(batch)
        assert await store.query() == batch
    finally:
        await store.aclose()


async def test_a_bad_row_in_a_later_chunk_refuses_the_whole_batch(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    try:
        batch = [row(request_id=f"r{i}", started_at=1000.0 + i) for i in range(123)]
        bad = row(costs=costs(cloud_usd=None))  # NOT NULL
        with pytest.raises(LedgerStoreError, match="NOT NULL"):
            await store.write([*batch[:75], bad, *batch[75:]])
        assert await store.query() == []
        await store.write(batch)
        assert len(await store.query()) == 123
    finally:
        await store.aclose()
