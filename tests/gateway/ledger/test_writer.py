from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from gateway.ledger.record import LedgerRecord
from gateway.ledger.store import LedgerStoreError, SQLiteStore, StoredRecord
from gateway.ledger.writer import Ledger
from gateway.settings import LedgerSettings
from tests.gateway.ledger.rows import record


class FakeStore:
    """Keeps batches in memory; raises the queued failures first, one per write."""

    def __init__(self, failures: Sequence[Exception] = ()) -> None:
        self.batches: list[list[StoredRecord]] = []
        self.failures = list(failures)
        self.attempts = 0
        self.closed = False
        #: when set, a write waits for it (lets a test act while a batch is in flight)
        self.gate: asyncio.Event | None = None

    async def write(self, rows: Sequence[StoredRecord]) -> None:
        self.attempts += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failures:
            raise self.failures.pop(0)
        self.batches.append(list(rows))

    async def query(
        self, *, since: float | None = None, until: float | None = None
    ) -> list[StoredRecord]:
        return [row for batch in self.batches for row in batch]

    async def aclose(self) -> None:
        self.closed = True

    @property
    def ids(self) -> list[str]:
        return [row.record.request_id for batch in self.batches for row in batch]


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _records(n: int, start: int = 0) -> list[LedgerRecord]:
    return [record(request_id=f"r{i}", started_at=1e9 + i) for i in range(start, start + n)]


def _ledger(store: Any, **settings: Any) -> Ledger:
    return Ledger(
        store,
        LedgerSettings(**settings),
        cloud_model="gpt-4o-mini",
        backoff_initial_s=0.01,
        backoff_max_s=0.05,
    )


async def _until(condition: Any, timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


def _ledger_messages(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "gateway.ledger.writer" and r.levelno == level
    ]


async def test_flush_writes_in_batches_in_order() -> None:
    store = FakeStore()
    ledger = _ledger(store, batch_size=3)
    for r in _records(7):
        ledger.record(r)
    assert ledger.queue_depth == 7
    await ledger.flush()
    assert [len(b) for b in store.batches] == [3, 3, 1]
    assert store.ids == [f"r{i}" for i in range(7)]
    assert (ledger.written, ledger.queue_depth, ledger.dropped) == (7, 0, 0)
    # costs are computed when the record is queued
    assert store.batches[0][0].costs.savings_usd == 0


async def test_background_writer_writes_a_full_batch_at_once_and_the_rest_on_time() -> None:
    store = FakeStore()
    ledger = _ledger(store, batch_size=3, flush_interval_s=1.0)
    await ledger.start()
    try:
        for r in _records(3):
            ledger.record(r)
        await _until(lambda: ledger.written == 3, timeout=0.5)  # well before the interval
        ledger.record(_records(1, start=3)[0])
        await asyncio.sleep(0.1)
        assert ledger.written == 3  # a partial batch waits for the interval
        await _until(lambda: ledger.written == 4, timeout=3)
    finally:
        await ledger.aclose()
    assert store.ids == ["r0", "r1", "r2", "r3"]


async def test_aclose_flushes_then_closes_the_store() -> None:
    store = FakeStore()
    ledger = _ledger(store, flush_interval_s=60)
    await ledger.start()
    for r in _records(5):
        ledger.record(r)
    await ledger.aclose()
    assert store.ids == [f"r{i}" for i in range(5)]
    assert store.closed
    await ledger.aclose()  # idempotent


async def test_full_queue_drops_new_records_counted_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = FakeClock()
    store = FakeStore()
    ledger = Ledger(store, LedgerSettings(max_queue=2), cloud_model="gpt-4o-mini", clock=clock)
    with caplog.at_level(logging.WARNING):
        for r in _records(5):
            ledger.record(r)
        assert (ledger.queue_depth, ledger.dropped) == (2, 3)
        # rate-limited: one line for three drops, with the running total
        [first] = _ledger_messages(caplog, logging.WARNING)
        assert "dropped 1 record(s): the queue is full" in first
        assert "(1 dropped in total)" in first
        clock.now += 60
        ledger.record(_records(1, start=5)[0])
        second = _ledger_messages(caplog, logging.WARNING)[1]
        assert "(4 dropped in total)" in second
        assert "2 similar message(s) suppressed" in second
    await ledger.flush()
    assert store.ids == ["r0", "r1"]


@pytest.mark.parametrize(
    "failure",
    [
        sqlite3.OperationalError("database is locked"),
        OSError(errno.ENOSPC, "No space left on device"),
    ],
)
async def test_failing_store_keeps_records_and_writes_them_in_order(
    failure: Exception, caplog: pytest.LogCaptureFixture
) -> None:
    store = FakeStore(failures=[failure] * 4)
    ledger = _ledger(store, batch_size=4, flush_interval_s=0.01)
    await ledger.start()
    try:
        with caplog.at_level(logging.INFO):
            for r in _records(6):
                ledger.record(r)
            await _until(lambda: store.attempts >= 2)
            for r in _records(5, start=6):  # more traffic while the store is down
                ledger.record(r)
            await _until(lambda: ledger.written == 11)
    finally:
        await ledger.aclose()
    assert store.ids == [f"r{i}" for i in range(11)]
    assert (ledger.write_failures, ledger.dropped, ledger.queue_depth) == (4, 0, 0)
    [warning] = _ledger_messages(caplog, logging.WARNING)  # rate-limited
    assert type(failure).__name__ in warning
    assert any("works again" in m for m in _ledger_messages(caplog, logging.INFO))


async def test_requeued_batch_beyond_the_bound_drops_the_oldest() -> None:
    store = FakeStore(failures=[sqlite3.OperationalError("database is locked")])
    store.gate = asyncio.Event()
    ledger = _ledger(store, batch_size=5, max_queue=5)
    for r in _records(5):
        ledger.record(r)
    flushing = asyncio.create_task(ledger.flush())
    await _until(lambda: store.attempts == 1)
    for r in _records(3, start=5):  # arrive while r0-r4 are in flight
        ledger.record(r)
    store.gate.set()
    await flushing
    assert (ledger.write_failures, ledger.dropped, ledger.queue_depth) == (1, 3, 5)
    await ledger.flush()
    assert store.ids == ["r3", "r4", "r5", "r6", "r7"]


async def test_record_never_raises_when_costing_fails(caplog: pytest.LogCaptureFixture) -> None:
    store = FakeStore()
    ledger = _ledger(store)
    broken = record(local_seconds=None)  # a bug upstream: no number to price
    with caplog.at_level(logging.ERROR):
        ledger.record(broken)
    assert (ledger.dropped, ledger.queue_depth) == (1, 0)
    [message] = _ledger_messages(caplog, logging.ERROR)
    assert "could not be queued" in message
    assert caplog.records[-1].exc_info is not None
    ledger.record(record())
    assert ledger.queue_depth == 1


async def test_record_after_close_is_dropped_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    ledger = _ledger(FakeStore())
    await ledger.aclose()
    with caplog.at_level(logging.WARNING):
        ledger.record(record())
    assert ledger.dropped == 1
    assert "the ledger is closed" in _ledger_messages(caplog, logging.WARNING)[0]


async def test_unpriced_cloud_model_is_warned_about_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING):
        ledger = Ledger(FakeStore(), LedgerSettings(), cloud_model="my-model")
        for _ in range(3):
            ledger.record(record(route="cloud", cloud_model="other-model"))
    warnings = _ledger_messages(caplog, logging.WARNING)
    assert len(warnings) == 2
    assert "'my-model'" in warnings[0]
    assert "'other-model'" in warnings[1]


async def test_real_database_lock_delays_records_until_released(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite3"
    store = SQLiteStore(path, busy_timeout_s=0.05)
    ledger = _ledger(store, flush_interval_s=0.01)
    await ledger.start()
    try:
        ledger.record(_records(1)[0])
        await ledger.flush()
        assert ledger.written == 1
        with contextlib.closing(sqlite3.connect(path, isolation_level=None)) as locker:
            locker.execute("BEGIN EXCLUSIVE")
            for r in _records(3, start=1):
                ledger.record(r)
            await _until(lambda: ledger.write_failures >= 2)
            assert ledger.written == 1
            locker.execute("COMMIT")
        await _until(lambda: ledger.written == 4)
        rows = await store.query()
    finally:
        await ledger.aclose()
    assert [r.record.request_id for r in rows] == ["r0", "r1", "r2", "r3"]
    assert ledger.dropped == 0


async def test_unwritable_path_never_reaches_serving(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = SQLiteStore(tmp_path)  # a directory: sqlite cannot open it
    ledger = Ledger(
        store,
        LedgerSettings(flush_interval_s=0.01),
        cloud_model="gpt-4o-mini",
        backoff_initial_s=0.01,
        close_timeout_s=0.1,
    )
    await ledger.start()
    with caplog.at_level(logging.WARNING):
        for r in _records(3):
            ledger.record(r)  # the serving side: no exception, no wait
        await _until(lambda: ledger.write_failures >= 1)
        await ledger.aclose()
    assert (ledger.written, ledger.dropped, ledger.queue_depth) == (0, 3, 0)
    assert "unable to open database file" in _ledger_messages(caplog, logging.WARNING)[0]
    [lost] = _ledger_messages(caplog, logging.ERROR)
    assert "3 record(s) not written before shutdown are lost" in lost


class LostAcknowledgement(SQLiteStore):
    """Commits the first batch, then reports a failure, as a dropped connection after
    COMMIT would: the writer must retry, and the retry must not store the rows twice."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.lost = 0

    async def write(self, rows: Sequence[StoredRecord]) -> None:
        await super().write(rows)
        if self.lost == 0:
            self.lost += 1
            raise LedgerStoreError("connection lost after COMMIT")


async def test_a_batch_retried_after_a_lost_commit_is_stored_once(tmp_path: Path) -> None:
    store = LostAcknowledgement(tmp_path / "ledger.sqlite3")
    ledger = _ledger(store, batch_size=10)
    await ledger.start()
    for r in _records(4):
        ledger.record(r)
    await _until(lambda: ledger.written == 4)
    await ledger.aclose()
    assert store.lost == 1
    reader = SQLiteStore(tmp_path / "ledger.sqlite3")
    try:
        ids = [row.record.request_id for row in await reader.query()]
    finally:
        await reader.aclose()
    assert ids == ["r0", "r1", "r2", "r3"]


async def test_a_record_the_store_refuses_is_dropped_and_the_others_written(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # A str no encoding can carry: retrying its batch could never succeed, and used
    # to hold every record queued with it back for good.
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    ledger = _ledger(store, batch_size=10)
    for n in range(5):
        ledger.record(record(request_id=f"req-{n}", model="bad\ud800" if n == 2 else "m"))
    with caplog.at_level(logging.ERROR, logger="gateway.ledger.writer"):
        await ledger.flush()
    written = [r.record.request_id for r in await store.query()]
    assert written == ["req-0", "req-1", "req-3", "req-4"]
    assert (ledger.written, ledger.dropped, ledger.queue_depth) == (4, 1, 0)
    assert any("dropped record 'req-2'" in m for m in _ledger_messages(caplog, logging.ERROR))
    await ledger.aclose()


async def test_a_store_failure_while_writing_one_by_one_keeps_the_rest_queued() -> None:
    store = FakeStore(
        failures=[
            UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed"),  # the batch
            UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed"),  # row 0
            OSError(errno.ENOSPC, "No space left on device"),  # row 1: the store, not the row
        ]
    )
    ledger = _ledger(store, batch_size=10)
    for n in range(4):
        ledger.record(record(request_id=f"req-{n}"))
    await ledger.flush()
    assert (ledger.dropped, ledger.queue_depth, ledger.write_failures) == (1, 3, 1)
    await ledger.flush()  # the store works again: all three, in order
    assert [r.record.request_id for r in await store.query()] == ["req-1", "req-2", "req-3"]
    assert (ledger.written, ledger.queue_depth) == (3, 0)


async def test_a_row_breaking_a_constraint_is_dropped_alone(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "ledger.sqlite3")
    ledger = _ledger(store, batch_size=10)
    for n in range(3):  # a NOT NULL column left empty (a bug elsewhere): IntegrityError
        ledger.record(record(request_id=f"req-{n}", total_seconds=None if n == 1 else 0.5))
    await ledger.flush()
    assert [r.record.request_id for r in await store.query()] == ["req-0", "req-2"]
    assert (ledger.written, ledger.dropped, ledger.queue_depth) == (2, 1, 0)
    await ledger.aclose()


async def test_writing_one_by_one_after_a_store_failure_says_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    refused = UnicodeEncodeError("utf-8", "x", 0, 1, "surrogates not allowed")
    store = FakeStore(failures=[OSError(errno.EIO, "I/O error"), refused, refused])
    ledger = _ledger(store, batch_size=10)
    for n in range(3):
        ledger.record(record(request_id=f"req-{n}"))
    await ledger.flush()  # the store fails: all three queued again
    assert (ledger.queue_depth, ledger.write_failures) == (3, 1)
    with caplog.at_level(logging.INFO, logger="gateway.ledger.writer"):
        await ledger.flush()  # refused as a batch, then req-0 alone
    assert [r.record.request_id for r in await store.query()] == ["req-1", "req-2"]
    assert (ledger.written, ledger.dropped, ledger.queue_depth) == (2, 1, 0)
    assert any("works again" in m for m in _ledger_messages(caplog, logging.INFO))
