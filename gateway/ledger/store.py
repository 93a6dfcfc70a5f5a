"""Where ledger rows are kept: a small interface, and SQLite behind it.

The interface is what the writer and the usage endpoint need (write a batch,
read a time window, close), so a server database can be added beside SQLite.

SQLite runs on one dedicated thread that owns the connection: the event loop
never waits on the disk, and sqlite3's one-thread-per-connection rule holds.
The connection is opened on first use and reopened after any failure, so a
database that is missing, locked or on a full disk at start-up is retried by
the writer instead of stopping the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

from gateway.ledger.cost import Costs
from gateway.ledger.record import LedgerRecord

T = TypeVar("T")

SCHEMA_VERSION = 1
TABLE = "records"

# Schema version 1, in LedgerRecord's then Costs' field order (a test keeps them equal).
# Written out rather than derived so that changing the record is a visible schema change.
COLUMNS: tuple[tuple[str, str], ...] = (
    ("request_id", "TEXT NOT NULL"),
    ("started_at", "REAL NOT NULL"),
    ("endpoint", "TEXT NOT NULL"),
    ("model", "TEXT NOT NULL"),
    ("stream", "INTEGER NOT NULL"),
    ("status", "INTEGER NOT NULL"),
    ("error", "TEXT"),
    ("route", "TEXT"),
    ("reason", "TEXT"),
    ("degraded", "TEXT"),
    ("privacy_match", "TEXT"),
    ("prompt_tokens", "INTEGER"),
    ("confidence", "REAL"),
    ("threshold", "REAL"),
    ("local_prompt_tokens", "INTEGER NOT NULL"),
    ("local_completion_tokens", "INTEGER NOT NULL"),
    ("local_seconds", "REAL NOT NULL"),
    ("local_queue_seconds", "REAL NOT NULL"),
    ("cloud_model", "TEXT"),
    ("cloud_prompt_tokens", "INTEGER NOT NULL"),
    ("cloud_completion_tokens", "INTEGER NOT NULL"),
    ("cloud_seconds", "REAL NOT NULL"),
    ("cloud_attempts", "INTEGER NOT NULL"),
    ("ttft_seconds", "REAL"),
    ("total_seconds", "REAL NOT NULL"),
    ("key_id", "TEXT"),
    ("prompt_text", "TEXT"),
    ("completion_text", "TEXT"),
    ("cloud_usd", "REAL NOT NULL"),
    ("local_usd", "REAL NOT NULL"),
    ("local_energy_wh", "REAL"),
    ("local_gco2e", "REAL"),
    ("counterfactual_usd", "REAL NOT NULL"),
    ("savings_usd", "REAL NOT NULL"),
)
COLUMN_NAMES = tuple(name for name, _ in COLUMNS)
_RECORD_FIELDS = tuple(f.name for f in fields(LedgerRecord))
_COST_FIELDS = tuple(f.name for f in fields(Costs))

# No uniqueness on request_id: clients choose it (x-request-id) and may repeat it.
_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, "
    + ", ".join(f"{name} {kind}" for name, kind in COLUMNS)
    + ")",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_started_at ON {TABLE} (started_at)",
    f"CREATE INDEX IF NOT EXISTS {TABLE}_route_started_at ON {TABLE} (route, started_at)",
)
_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join(COLUMN_NAMES)}) "
    f"VALUES ({', '.join('?' for _ in COLUMN_NAMES)})"
)
_SELECT = f"SELECT {', '.join(COLUMN_NAMES)} FROM {TABLE}"


class LedgerStoreError(Exception):
    """The store could not be opened, written or read (the cause is chained)."""


@dataclass(frozen=True)
class StoredRecord:
    record: LedgerRecord
    costs: Costs

    def as_row(self) -> dict[str, Any]:
        """Every record field then every cost field, by column name."""
        return {**asdict(self.record), **asdict(self.costs)}


class LedgerStore(Protocol):
    async def write(self, rows: Sequence[StoredRecord]) -> None:
        """Store all rows or none; raise on failure (the writer keeps them and retries)."""

    async def query(
        self, *, since: float | None = None, until: float | None = None
    ) -> list[StoredRecord]:
        """Rows with ``since <= started_at < until``, oldest first; LedgerStoreError on failure."""

    async def aclose(self) -> None: ...


def _params(row: StoredRecord) -> tuple[Any, ...]:
    values = row.as_row()
    return tuple(values[name] for name in COLUMN_NAMES)


def _from_row(values: sqlite3.Row) -> StoredRecord:
    record: dict[str, Any] = {name: values[name] for name in _RECORD_FIELDS}
    record["stream"] = bool(record["stream"])
    costs = {name: values[name] for name in _COST_FIELDS}
    return StoredRecord(LedgerRecord(**record), Costs(**costs))


def _rollback(connection: sqlite3.Connection) -> None:
    # The original error is the one worth raising; a failed rollback ends with the connection.
    with contextlib.suppress(sqlite3.Error):
        if connection.in_transaction:
            connection.execute("ROLLBACK")


class SQLiteStore:
    """The ledger in one SQLite file (WAL journal, so readers never block the writer)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._connection: sqlite3.Connection | None = None
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    async def write(self, rows: Sequence[StoredRecord]) -> None:
        if rows:
            params = [_params(row) for row in rows]
            await self._run(lambda: self._write(params))

    async def query(
        self, *, since: float | None = None, until: float | None = None
    ) -> list[StoredRecord]:
        return await self._run(lambda: self._query(since, until))

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        await asyncio.get_running_loop().run_in_executor(self._executor, self._disconnect)
        self._executor.shutdown(wait=True)

    async def _run(self, work: Callable[[], T]) -> T:
        if self._closed:
            raise LedgerStoreError(f"the ledger store {self.path} is closed")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except (sqlite3.Error, OSError) as exc:
            raise LedgerStoreError(f"ledger database {self.path}: {exc}") from exc

    # Everything below runs on the store's own thread.

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None:
            return self._connection
        # timeout= is SQLite's busy_timeout: wait that long for another writer's lock.
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT) below.
        connection = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            connection.row_factory = sqlite3.Row
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL journal (got {mode})")
            # Safe with WAL: a power cut may lose the last transactions, never corrupt the file.
            connection.execute("PRAGMA synchronous = NORMAL")
            self._create_schema(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        return connection

    @staticmethod
    def _create_schema(connection: sqlite3.Connection) -> None:
        connection.execute("BEGIN IMMEDIATE")
        try:
            for statement in _SCHEMA:
                connection.execute(statement)
            found = connection.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            if found is None:
                connection.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif found != SCHEMA_VERSION:
                raise sqlite3.DatabaseError(
                    f"schema version {found}, this gateway knows version {SCHEMA_VERSION}"
                )
            connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    def _write(self, params: list[tuple[Any, ...]]) -> None:
        try:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            try:
                connection.executemany(_INSERT, params)
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
                raise
        except BaseException:
            # A fresh connection next time: the file may have been fixed, moved or recreated.
            self._disconnect()
            raise

    def _query(self, since: float | None, until: float | None) -> list[StoredRecord]:
        conditions: list[str] = []
        args: list[float] = []
        if since is not None:
            conditions.append("started_at >= ?")
            args.append(since)
        if until is not None:
            conditions.append("started_at < ?")
            args.append(until)
        where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
        try:
            cursor = self._connect().execute(f"{_SELECT}{where} ORDER BY started_at, id", args)
            return [_from_row(row) for row in cursor.fetchall()]
        except BaseException:
            self._disconnect()
            raise
