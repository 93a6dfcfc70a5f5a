"""Where ledger rows are kept: a small interface, and SQLite behind it.

The interface is what the writer, the usage endpoint and ``report`` need
(write a batch, read a time window, summarize it in the database, export it a
page at a time, close); SQLite is here, Postgres in postgres.py, and stores.py
picks one from the settings. The SQL that both backends run is here too.

Schemas are versioned: each backend has a list of migrations (statements that
take the schema from version N to N + 1) and a ``schema_version`` table that
says how many have been applied. Opening a store applies the missing ones;
``migrate()`` does the same on request (``hybrid-gateway ledger migrate``).

SQLite runs on one dedicated thread that owns the connection: the event loop
never waits on the disk, and sqlite3's one-thread-per-connection rule holds.
The connection is opened on first use and reopened after any failure, so a
database that is missing, locked or on a full disk at start-up is retried by
the writer instead of stopping the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import math
import operator
import os
import sqlite3
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar, cast

from gateway.ledger.cost import Costs
from gateway.ledger.record import LedgerRecord
from gateway.ledger.summary import (
    PERCENTILES,
    Percentiles,
    RouteLatency,
    Tally,
    nearest_rank,
    percentiles_of,
    summary_of,
)
from local_model.values import value

T = TypeVar("T")

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
#: not a record field: the id the writer gives each row, unique, so writing it twice is a no-op
UID_COLUMN = "record_uid"
_RECORD_FIELDS = tuple(f.name for f in fields(LedgerRecord))
_COST_FIELDS = tuple(f.name for f in fields(Costs))
_record_values = operator.attrgetter(*_RECORD_FIELDS)
_cost_values = operator.attrgetter(*_COST_FIELDS)

# MIGRATIONS[n] takes a SQLite ledger from schema version n to n + 1; never edit one that
# has shipped. A new column goes at the end of COLUMNS, with a migration that adds it here
# and one in postgres.py. IF NOT EXISTS: ledgers made before the list existed already have
# the tables of version 1.
# No uniqueness on request_id: clients choose it (x-request-id) and may repeat it.
_VERSION_1_COLUMNS = COLUMNS[:34]
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"CREATE TABLE IF NOT EXISTS {TABLE} (id INTEGER PRIMARY KEY, "
        + ", ".join(f"{name} {kind}" for name, kind in _VERSION_1_COLUMNS)
        + ")",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_started_at ON {TABLE} (started_at)",
        f"CREATE INDEX IF NOT EXISTS {TABLE}_route_started_at ON {TABLE} (route, started_at)",
    ),
    # 2: every row carries the writer's id for it, so a batch written again after an
    # unacknowledged commit cannot store a record twice (rows from version 1 keep NULL).
    (
        f"ALTER TABLE {TABLE} ADD COLUMN {UID_COLUMN} TEXT",
        f"CREATE UNIQUE INDEX IF NOT EXISTS {TABLE}_{UID_COLUMN} ON {TABLE} ({UID_COLUMN})",
    ),
    # 3: a client key's /v1/usage reads that key's rows of the window, not every row.
    (f"CREATE INDEX IF NOT EXISTS {TABLE}_key_id_started_at ON {TABLE} (key_id, started_at)",),
    # 4: no query reads (route, started_at): summaries group the window's rows, which
    # they find by started_at or (key_id, started_at). Keeping it up cost ~8% of an insert.
    (f"DROP INDEX IF EXISTS {TABLE}_route_started_at",),
)
SCHEMA_VERSION = len(MIGRATIONS)
_ROW_WIDTH = len(COLUMN_NAMES) + 1  # the columns and the uid


@functools.cache
def _insert(rows: int) -> str:
    """An INSERT of ``rows`` rows (a row already stored, by uid, is skipped)."""
    one = f"({', '.join('?' * _ROW_WIDTH)})"
    return (
        f"INSERT INTO {TABLE} ({', '.join((*COLUMN_NAMES, UID_COLUMN))}) "
        f"VALUES {', '.join([one] * rows)} ON CONFLICT ({UID_COLUMN}) DO NOTHING"
    )


_INSERT = _insert(1)
#: Rows per multi-row INSERT. executemany steps each row on its own, and sqlite3
#: releases and retakes the GIL around every step: inside the gateway under load,
#: where the event loop wants the GIL back each time, the store's thread spent about
#: twice the CPU per row that the same inserts take alone. One statement of many rows
#: binds them all, then steps once. SQLite before 3.32 allows only 999 parameters
#: in a statement: the chunk shrinks to fit the connection's limit.
_CHUNK_ROWS = 50
_SELECT = f"SELECT {', '.join(COLUMN_NAMES)} FROM {TABLE}"

# What summary.route_name calls a row's route, in SQL.
ROUTE = "coalesce(nullif(route, ''), 'none')"
# summary.Tally's fields in SQL, one GROUP BY row per route, reason and status. The same
# statement in both backends: count(x) counts non-NULL values, SUM over none is NULL.
TALLY: dict[str, str] = {
    "route": ROUTE,
    "reason": "coalesce(nullif(reason, ''), 'none')",
    "status": "status",
    "requests": "count(*)",
    "with_ttft": "count(ttft_seconds)",
    "judged": "count(CASE WHEN confidence IS NOT NULL OR route = 'local->cloud' THEN 1 END)",
    "escalated": "count(CASE WHEN route = 'local->cloud' THEN 1 END)",
    "degraded": "count(degraded)",
    "local_prompt_tokens": "sum(local_prompt_tokens)",
    "local_completion_tokens": "sum(local_completion_tokens)",
    "cloud_prompt_tokens": "sum(cloud_prompt_tokens)",
    "cloud_completion_tokens": "sum(cloud_completion_tokens)",
    "cloud_usd": "sum(cloud_usd)",
    "local_usd": "sum(local_usd)",
    "counterfactual_usd": "sum(counterfactual_usd)",
    "savings_usd": "sum(savings_usd)",
    "energy_requests": "count(local_energy_wh)",
    "energy_wh": "sum(local_energy_wh)",
    "gco2e": "sum(CASE WHEN local_energy_wh IS NOT NULL THEN coalesce(local_gco2e, 0.0) END)",
}
#: rows an export reads per query
PAGE_ROWS = 1000


class LedgerStoreError(Exception):
    """The store could not be opened, migrated, written or read (the cause is chained)."""


class LedgerDataError(LedgerStoreError, ValueError):
    """The store refused rows for what they hold (a constraint, a value out of range):
    writing them again cannot succeed, unlike a store that is down, locked or full."""


@dataclass(frozen=True)
class Migration:
    """What ``migrate()`` found and left: schema versions (0 = no ledger tables yet)."""

    before: int
    after: int


def newer_schema_error(found: int, known: int) -> str:
    return f"schema version {found}, this gateway knows version {known}"


def new_uid() -> str:
    """32 hex digits: the time in milliseconds (12), then 80 random bits (as UUIDv7 orders them).

    Time first, so each batch's new keys land at the right-hand edge of the unique
    index: with random keys (uuid4-like) every row of a batch dirtied its own
    index page, and SQLite wrote each page again to the WAL. On a 20,000-row
    ledger that cost about 15 us of CPU per row (user + system), 25 against 10
    (bench/ledger_store.py); the gap grows with the table.
    Not uuid.uuid7 (Python 3.14) or a UUID object: this is several times cheaper.
    """
    return f"{time.time_ns() // 1_000_000:012x}{os.urandom(10).hex()}"


@value
class StoredRecord:
    record: LedgerRecord
    costs: Costs
    #: made once per record (a copy made with dataclasses.replace is a new record and gets
    #: its own), kept across retries: the store ignores a row it already has
    uid: str = field(default_factory=new_uid, compare=False, init=False)

    def as_row(self) -> dict[str, Any]:
        """Every record field then every cost field, by column name."""
        return dict(zip(COLUMN_NAMES, self.values(), strict=True))

    def values(self) -> tuple[Any, ...]:
        """The row's values in COLUMN_NAMES order (the fields are flat: no asdict copies)."""
        return (*_record_values(self.record), *_cost_values(self.costs))


class LedgerStore(Protocol):
    async def write(self, rows: Sequence[StoredRecord]) -> None:
        """Store all rows or none; raise on failure (the writer keeps them and retries),
        LedgerDataError (or ValueError, TypeError) when the rows' content is refused."""

    async def query(
        self, *, since: float | None = None, until: float | None = None
    ) -> list[StoredRecord]:
        """Rows with ``since <= started_at < until``, oldest first; LedgerStoreError on failure."""

    async def summarize(
        self, *, since: float | None, until: float | None, key_id: str | None = None
    ) -> dict[str, Any]:
        """summary.summarize of the window's rows (only ``key_id``'s, if given), computed in
        the database: memory does not grow with the rows. LedgerStoreError on failure."""

    def scan(
        self, *, since: float | None = None, until: float | None = None
    ) -> AsyncIterator[StoredRecord]:
        """The window's rows as ``query`` has them, read PAGE_ROWS at a time (for exports)."""

    async def aclose(self) -> None: ...


class VersionedStore(LedgerStore, Protocol):
    """A store whose schema can also be migrated on request (``hybrid-gateway ledger migrate``)."""

    async def migrate(self) -> Migration:
        """Apply the missing migrations now; LedgerStoreError on failure."""


def row_params(row: StoredRecord) -> tuple[Any, ...]:
    """The row's values in COLUMN_NAMES order, then its uid (a backend's INSERT parameters)."""
    return (*row.values(), row.uid)


def window_clause(
    since: float | None,
    until: float | None,
    placeholder: str,
    *,
    key_id: str | None = None,
    also: Sequence[str] = (),
) -> tuple[str, list[Any]]:
    """`` WHERE since <= started_at < until`` (either bound optional; ``AND key_id = ...``
    with a key; ``AND`` each of ``also``) and its arguments, with the backend's parameter
    placeholder (``?`` or ``%s``). The arguments of placeholders in ``also`` come after."""
    conditions: list[str] = []
    args: list[Any] = []
    if since is not None:
        conditions.append(f"started_at >= {placeholder}")
        args.append(since)
    if until is not None:
        conditions.append(f"started_at < {placeholder}")
        args.append(until)
    if key_id is not None:
        conditions.append(f"key_id = {placeholder}")
        args.append(key_id)
    conditions.extend(also)
    return (f" WHERE {' AND '.join(conditions)}" if conditions else ""), args


def tally_query(where: str) -> str:
    """The window's tallies (TALLY's columns) for a ``window_clause``."""
    return f"SELECT {', '.join(TALLY.values())} FROM {TABLE}{where} GROUP BY 1, 2, 3"


def tally_of(columns: Iterable[Any]) -> Tally:
    return Tally(**dict(zip(TALLY, columns, strict=True)))


#: where a page ends: the last row's (started_at, id); None before the first page
PageKey = tuple[float, int] | None


def page_query(
    since: float | None, until: float | None, after: PageKey, placeholder: str
) -> tuple[str, list[Any]]:
    """The next page of an export and its arguments: up to PAGE_ROWS rows after ``after``,
    in (started_at, id) order. Keyset paging: each page is a query of its own, so no
    cursor, transaction or lock is held between pages."""
    where, args = window_clause(
        since, until, placeholder, also=[f"(started_at, id) > ({placeholder}, {placeholder})"]
    )
    statement = (
        f"SELECT started_at, id, {', '.join(COLUMN_NAMES)} FROM {TABLE}{where} "
        f"ORDER BY started_at, id LIMIT {placeholder}"
    )
    return statement, [*args, *(after or (-math.inf, 0)), PAGE_ROWS]


async def paged(
    fetch: Callable[[PageKey], Awaitable[Sequence[tuple[Any, ...]]]],
) -> AsyncIterator[StoredRecord]:
    """The rows of ``page_query``'s pages, one ``fetch`` each, until a page is short."""
    after: PageKey = None
    while True:
        page = await fetch(after)
        for columns in page:
            yield from_columns(columns[2:])
        if len(page) < PAGE_ROWS:
            return
        after = (page[-1][0], page[-1][1])


def from_columns(columns: Iterable[Any]) -> StoredRecord:
    """A row back from its values in COLUMN_NAMES order (a backend's SELECT result)."""
    values = dict(zip(COLUMN_NAMES, columns, strict=True))
    record: dict[str, Any] = {name: values[name] for name in _RECORD_FIELDS}
    record["stream"] = bool(record["stream"])
    costs = {name: values[name] for name in _COST_FIELDS}
    return StoredRecord(LedgerRecord(**record), Costs(**costs))


def _rollback(connection: sqlite3.Connection) -> None:
    # The original error is the one worth raising; a failed rollback ends with the connection.
    with contextlib.suppress(sqlite3.Error):
        if connection.in_transaction:
            connection.execute("ROLLBACK")


def _identity(path: Path) -> tuple[int, int] | None:
    """Which file a path names now (device, inode); None if it names none."""
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_dev, found.st_ino


def register_fast_adapters() -> None:
    """Bind None and bool parameters without sqlite3's failed adapter search.

    Python's sqlite3 binds only exact int, float, str and bytes directly; any
    other value (None, bool) goes through the adapter registry, and a miss
    there formats and discards an AttributeError on the way: about a quarter
    of the CPU of inserting a ledger row, which has a dozen NULLs. Registered
    adapters turn that into a dict hit. They return what sqlite3 would have
    bound anyway (NULL; 0 or 1), so other users of sqlite3 in the process see
    no change. ``{}.get`` is a builtin returning None for any argument.
    """
    sqlite3.register_adapter(type(None), cast("Callable[[None], None]", {}.get))
    sqlite3.register_adapter(bool, int)


class SQLiteStore:
    """The ledger in one SQLite file (WAL journal, so readers never block the writer)."""

    def __init__(self, path: Path, *, busy_timeout_s: float = 5.0) -> None:
        register_fast_adapters()
        self.path = path
        self._busy_timeout_s = busy_timeout_s
        self._connection: sqlite3.Connection | None = None
        #: (device, inode) of the file the connection opened; None when it has none
        self._file: tuple[int, int] | None = None
        self._migration = Migration(SCHEMA_VERSION, SCHEMA_VERSION)
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger-sqlite")
        self._closed = False

    def __repr__(self) -> str:
        return f"SQLiteStore({str(self.path)!r})"

    async def write(self, rows: Sequence[StoredRecord]) -> None:
        if rows:
            params = [row_params(row) for row in rows]
            await self._run(lambda: self._write(params))

    async def query(
        self, *, since: float | None = None, until: float | None = None
    ) -> list[StoredRecord]:
        return await self._run(lambda: self._read(lambda c: self._query(c, since, until)))

    async def summarize(
        self, *, since: float | None, until: float | None, key_id: str | None = None
    ) -> dict[str, Any]:
        return await self._run(lambda: self._read(lambda c: _summarize(c, since, until, key_id)))

    def scan(
        self, *, since: float | None = None, until: float | None = None
    ) -> AsyncIterator[StoredRecord]:
        def fetch(after: PageKey) -> list[tuple[Any, ...]]:
            statement, args = page_query(since, until, after, "?")
            return self._read(lambda c: c.execute(statement, args).fetchall())

        return paged(lambda after: self._run(lambda: fetch(after)))

    async def migrate(self) -> Migration:
        """Bring the schema up to SCHEMA_VERSION now (creating the file if need be)."""

        def reopen() -> Migration:
            self._disconnect()
            self._connect()
            return self._migration

        return await self._run(reopen)

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
        except (sqlite3.IntegrityError, sqlite3.DataError) as exc:
            raise LedgerDataError(f"ledger database {self.path}: {exc}") from exc
        except (sqlite3.Error, OSError) as exc:
            raise LedgerStoreError(f"ledger database {self.path}: {exc}") from exc

    # Everything below runs on the store's own thread.

    def _connect(self) -> sqlite3.Connection:
        if self._connection is not None:
            if self._file is None or _identity(self.path) == self._file:
                return self._connection
            # The file was deleted or replaced under the open connection (its directory
            # removed, a backup restored): SQLite would go on writing to the unlinked file,
            # and every record would vanish with it. Open the path again instead.
            self._disconnect()
        # timeout= is SQLite's busy_timeout: wait that long for another writer's lock.
        # isolation_level=None: transactions are explicit (BEGIN ... COMMIT) below.
        connection = sqlite3.connect(self.path, timeout=self._busy_timeout_s, isolation_level=None)
        try:
            mode = connection.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"cannot switch to WAL journal (got {mode})")
            # Safe with WAL: a power cut may lose the last transactions, never corrupt the file.
            connection.execute("PRAGMA synchronous = NORMAL")
            self._migration = self._apply_migrations(connection)
        except BaseException:
            connection.close()
            raise
        self._connection = connection
        self._file = _identity(self.path)
        return connection

    @staticmethod
    def _apply_migrations(connection: sqlite3.Connection) -> Migration:
        # BEGIN IMMEDIATE takes the write lock first: two processes opening one new
        # file migrate one after the other, and the second finds nothing to do.
        connection.execute("BEGIN IMMEDIATE")
        try:
            connection.execute(
                "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)"
            )
            found = connection.execute("SELECT max(version) FROM schema_version").fetchone()[0]
            before = 0 if found is None else int(found)
            if before > SCHEMA_VERSION:
                raise sqlite3.DatabaseError(newer_schema_error(before, SCHEMA_VERSION))
            for statements in MIGRATIONS[before:]:
                for statement in statements:
                    connection.execute(statement)
            if found is None:
                connection.execute("INSERT INTO schema_version VALUES (?)", (SCHEMA_VERSION,))
            elif before < SCHEMA_VERSION:
                connection.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            connection.execute("COMMIT")
        except BaseException:
            _rollback(connection)
            raise
        return Migration(before, SCHEMA_VERSION)

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    @staticmethod
    def _rows_per_insert(connection: sqlite3.Connection) -> int:
        """Rows per multi-row INSERT that fit this connection's parameter limit."""
        limit = connection.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER)
        return max(1, min(_CHUNK_ROWS, limit // _ROW_WIDTH))

    def _write(self, params: list[tuple[Any, ...]]) -> None:
        try:
            connection = self._connect()
            chunk = self._rows_per_insert(connection)
            whole = len(params) - len(params) % chunk
            connection.execute("BEGIN IMMEDIATE")
            try:
                for start in range(0, whole, chunk):
                    values = list(itertools.chain.from_iterable(params[start : start + chunk]))
                    connection.execute(_insert(chunk), values)
                if whole < len(params):
                    connection.executemany(_INSERT, params[whole:])
                connection.execute("COMMIT")
            except BaseException:
                _rollback(connection)
                raise
        except BaseException:
            # A fresh connection next time: the file may have been fixed, moved or recreated.
            self._disconnect()
            raise

    def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        try:
            return work(self._connect())
        except BaseException:
            self._disconnect()
            raise

    @staticmethod
    def _query(
        connection: sqlite3.Connection, since: float | None, until: float | None
    ) -> list[StoredRecord]:
        where, args = window_clause(since, until, "?")
        cursor = connection.execute(f"{_SELECT}{where} ORDER BY started_at, id", args)
        return [from_columns(row) for row in cursor.fetchall()]


def _summarize(
    connection: sqlite3.Connection, since: float | None, until: float | None, key_id: str | None
) -> dict[str, Any]:
    where, args = window_clause(since, until, "?", key_id=key_id)
    # One read transaction: every statement sees the same rows (WAL: a snapshot).
    connection.execute("BEGIN")
    try:
        tallies = [tally_of(row) for row in connection.execute(tally_query(where), args)]
        counts: dict[str, dict[str, int]] = {}
        for tally in tallies:
            on_route = counts.setdefault(tally.route, {"ttft_seconds": 0, "total_seconds": 0})
            on_route["ttft_seconds"] += tally.with_ttft
            on_route["total_seconds"] += tally.requests
        found = {
            column: _ranked(connection, column, since, until, key_id, counts)
            for column in ("ttft_seconds", "total_seconds")
        }
    finally:
        _rollback(connection)  # nothing was written: ending the read is all it does
    latency = {
        route: RouteLatency(found["ttft_seconds"][route], found["total_seconds"][route])
        for route in counts
    }
    return summary_of(tallies, latency, since=since, until=until)


def _ranked(
    connection: sqlite3.Connection,
    column: str,
    since: float | None,
    until: float | None,
    key_id: str | None,
    counts: dict[str, dict[str, int]],
) -> dict[str, Percentiles]:
    """Each route's nearest-rank percentiles of ``column`` (NULLs left out), given how many
    non-NULL values each route has: the rank-th value of one sort by route and value."""
    ranks = {
        route: [nearest_rank(p, n[column]) for p in PERCENTILES]
        for route, n in counts.items()
        if n[column]
    }
    wanted = sorted({rank for route_ranks in ranks.values() for rank in route_ranks})
    values: dict[tuple[str, int], float] = {}
    if wanted:
        where, args = window_clause(
            since, until, "?", key_id=key_id, also=[f"{column} IS NOT NULL"]
        )
        statement = (
            f"SELECT route, k, value FROM (SELECT {ROUTE} AS route, {column} AS value, "
            f"row_number() OVER (PARTITION BY {ROUTE} ORDER BY {column}) AS k "
            f"FROM {TABLE}{where}) WHERE k IN ({', '.join('?' for _ in wanted)})"
        )
        for route, k, value in connection.execute(statement, [*args, *wanted]):
            values[(route, k)] = value
    return {
        route: percentiles_of(
            [values[(route, rank)] for rank in ranks[route]] if route in ranks else None
        )
        for route in counts
    }
