"""The ledger in PostgreSQL, for several gateway replicas that share one ledger.

Chosen by ``GATEWAY_LEDGER__URL`` (stores.py). Same rows and interface as
SQLiteStore, and times are double precision Unix seconds as there, so the
writer, ``/v1/usage`` and ``report`` run the same code on the same values.

One psycopg ``AsyncConnection``, opened on first use and dropped after any
failure: a database that is down at start-up, restarts, or has its sessions
killed is reconnected on the writer's next attempt. Operations take turns on
the connection, so a ``/v1/usage`` read never runs inside a batch's
transaction, and each has a deadline, so a database that stops answering
fails the batch (the writer keeps it) instead of hanging the writer.

Opening a connection applies the missing migrations in one transaction under
a transaction-scoped advisory lock: replicas that start together migrate one
after the other, the later ones find nothing to do. A ledger already at this
version is only read, so a role without CREATE rights can still run reports.

The URL may hold a password. It stays out of ``repr``, logs and error
messages: they show ``redact_url``'s form (``postgresql://user:***@host/db``).

Delivery is at least once: if the connection breaks after a batch's COMMIT
was sent but before its answer arrived, the batch may be stored and still be
retried by the writer. Everything else is exactly once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
from psycopg.conninfo import conninfo_to_dict

from gateway.ledger.store import (
    COLUMN_NAMES,
    ROUTE,
    TABLE,
    UID_COLUMN,
    LedgerDataError,
    LedgerStoreError,
    Migration,
    PageKey,
    StoredRecord,
    from_columns,
    newer_schema_error,
    page_query,
    paged,
    row_params,
    tally_of,
    tally_query,
    window_clause,
)
from gateway.ledger.summary import PERCENTILES, RouteLatency, percentiles_of, summary_of

logger = logging.getLogger(__name__)

T = TypeVar("T")
Connection = psycopg.AsyncConnection[tuple[Any, ...]]

# MIGRATIONS[n] takes a Postgres ledger from schema version n to n + 1; never edit one that
# has shipped, append a new one. Version 1 has SQLite's version-1 columns (a test compares
# them), with Postgres types: double precision where SQLite has REAL, boolean for stream.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"""CREATE TABLE {TABLE} (
            id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            request_id text NOT NULL,
            started_at double precision NOT NULL,
            endpoint text NOT NULL,
            model text NOT NULL,
            stream boolean NOT NULL,
            status integer NOT NULL,
            error text,
            route text,
            reason text,
            degraded text,
            privacy_match text,
            prompt_tokens integer,
            confidence double precision,
            threshold double precision,
            local_prompt_tokens integer NOT NULL,
            local_completion_tokens integer NOT NULL,
            local_seconds double precision NOT NULL,
            local_queue_seconds double precision NOT NULL,
            cloud_model text,
            cloud_prompt_tokens integer NOT NULL,
            cloud_completion_tokens integer NOT NULL,
            cloud_seconds double precision NOT NULL,
            cloud_attempts integer NOT NULL,
            ttft_seconds double precision,
            total_seconds double precision NOT NULL,
            key_id text,
            prompt_text text,
            completion_text text,
            cloud_usd double precision NOT NULL,
            local_usd double precision NOT NULL,
            local_energy_wh double precision,
            local_gco2e double precision,
            counterfactual_usd double precision NOT NULL,
            savings_usd double precision NOT NULL
        )""",
        f"CREATE INDEX {TABLE}_started_at ON {TABLE} (started_at)",
        f"CREATE INDEX {TABLE}_route_started_at ON {TABLE} (route, started_at)",
    ),
    # 2: the writer's id for each row (see store.py), so a batch retried after a commit
    # whose acknowledgement was lost cannot store a record twice.
    (
        f"ALTER TABLE {TABLE} ADD COLUMN {UID_COLUMN} text",
        f"CREATE UNIQUE INDEX {TABLE}_{UID_COLUMN} ON {TABLE} ({UID_COLUMN})",
    ),
    # 3: a client key's /v1/usage reads that key's rows of the window, not every row.
    (f"CREATE INDEX {TABLE}_key_id_started_at ON {TABLE} (key_id, started_at)",),
    # 4: as in SQLite, no query reads (route, started_at); it only slowed inserts.
    (f"DROP INDEX IF EXISTS {TABLE}_route_started_at",),
)
SCHEMA_VERSION = len(MIGRATIONS)

# pg_advisory_xact_lock key of the migrations: "hybridlg" in ASCII, unlikely to collide.
MIGRATION_LOCK = int.from_bytes(b"hybridlg", "big")

_INSERT = (
    f"INSERT INTO {TABLE} ({', '.join((*COLUMN_NAMES, UID_COLUMN))}) "
    f"VALUES ({', '.join('%s' for _ in range(len(COLUMN_NAMES) + 1))}) "
    f"ON CONFLICT ({UID_COLUMN}) DO NOTHING"
)
_SELECT = f"SELECT {', '.join(COLUMN_NAMES)} FROM {TABLE}"
# percentile_disc(f) is the value at row ceil(f * n) of the sorted non-NULL values (the
# first row when that is 0): summary.nearest_rank, with f = p / 100 as Python computes it.
_FRACTIONS = [p / 100 for p in PERCENTILES]


def _latency_query(where: str) -> str:
    """Each route's TTFT and total time at _FRACTIONS (arguments: those twice, then where's)."""
    return (
        f"SELECT {ROUTE}, "
        "percentile_disc(%s::double precision[]) WITHIN GROUP (ORDER BY ttft_seconds), "
        "percentile_disc(%s::double precision[]) WITHIN GROUP (ORDER BY total_seconds) "
        f"FROM {TABLE}{where} GROUP BY 1"
    )


def redact_url(url: str) -> str:
    """``url`` with its password (in the user part or a ``password=`` parameter) as ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "(an unparsable database URL)"
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hosts = netloc.rpartition("@")
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:***@{hosts}" if colon else f"{user}@{hosts}"
    query = "&".join(
        f"{item.partition('=')[0]}=***" if "password" in item.partition("=")[0].lower() else item
        for item in parts.query.split("&")
    )
    return urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _secrets(url: str) -> list[str]:
    """Every form in which the URL's passwords could appear in a message, longest first."""
    found: set[str] = set()
    try:
        parts = urlsplit(url)
    except ValueError:
        return [url]  # unparsable: keep the whole URL out of messages
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        found.add(userinfo.partition(":")[2])
    for item in parts.query.split("&"):
        key, _, value = item.partition("=")
        if "password" in key.lower():
            found.add(value)
    found |= {unquote(secret) for secret in found}
    return sorted((s for s in found if s), key=len, reverse=True)


class PostgresStore:
    """The ledger in a PostgreSQL database (tables in the first schema of search_path)."""

    def __init__(self, url: str, *, connect_timeout_s: int = 5, timeout_s: float = 30.0) -> None:
        """``connect_timeout_s``: libpq's ``connect_timeout`` unless the URL sets one;
        ``timeout_s``: deadline of one operation (connecting, migrating, a batch, a query)."""
        self._url = url
        #: the URL without its password, for messages
        self.location = redact_url(url)
        self._hidden = _secrets(url)
        self._connect_timeout_s = connect_timeout_s
        self._timeout_s = timeout_s
        self._connection: Connection | None = None
        self._lock = asyncio.Lock()
        self._closed = False
        self._migration = Migration(SCHEMA_VERSION, SCHEMA_VERSION)

    def __repr__(self) -> str:
        return f"PostgresStore({self.location!r})"

    async def write(self, rows: Sequence[StoredRecord]) -> None:
        if rows:
            params = [row_params(row) for row in rows]
            await self._run(lambda connection: _write(connection, params))

    async def query(
        self, *, since: float | None = None, until: float | None = None
    ) -> list[StoredRecord]:
        return await self._run(lambda connection: _query(connection, since, until))

    async def summarize(
        self, *, since: float | None, until: float | None, key_id: str | None = None
    ) -> dict[str, Any]:
        return await self._run(lambda connection: _summarize(connection, since, until, key_id))

    def scan(
        self, *, since: float | None = None, until: float | None = None
    ) -> AsyncIterator[StoredRecord]:
        async def fetch(connection: Connection, after: PageKey) -> list[tuple[Any, ...]]:
            statement, args = page_query(since, until, after, "%s")
            cursor = await connection.execute(statement, args)
            return await cursor.fetchall()

        return paged(lambda after: self._run(lambda connection: fetch(connection, after)))

    async def migrate(self) -> Migration:
        """Bring the schema up to SCHEMA_VERSION now, on a fresh connection."""

        async def migration(connection: Connection) -> Migration:
            return self._migration

        return await self._run(migration, fresh=True)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        async with self._lock:
            await self._disconnect()

    async def _run(self, work: Callable[[Connection], Awaitable[T]], *, fresh: bool = False) -> T:
        if self._closed:
            raise LedgerStoreError(f"the ledger store {self.location} is closed")
        async with self._lock:
            try:
                async with asyncio.timeout(self._timeout_s):
                    if fresh:
                        await self._disconnect()
                    return await work(await self._connect())
            except BaseException as exc:
                # Whatever state the session is in now (mid-transaction, broken, cancelled
                # mid-query), the next operation starts on a new one.
                await self._disconnect()
                if isinstance(exc, psycopg.Error | OSError | TimeoutError | LedgerStoreError):
                    raise self._error(exc) from (None if self._leaks(exc) else exc)
                raise

    async def _connect(self) -> Connection:
        if self._connection is not None and not self._connection.closed:
            return self._connection
        options: dict[str, Any] = {"autocommit": True}
        if "connect_timeout" not in conninfo_to_dict(self._url):
            options["connect_timeout"] = self._connect_timeout_s
        connection = await psycopg.AsyncConnection.connect(self._url, **options)
        try:
            self._migration = await _apply_migrations(connection)
        except BaseException:
            await connection.close()
            raise
        if self._migration.before != self._migration.after:
            logger.info(
                "ledger: migrated %s from schema version %d to %d",
                self.location,
                self._migration.before,
                self._migration.after,
            )
        self._connection = connection
        return connection

    async def _disconnect(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            try:
                await connection.close()
            except Exception:  # the session is gone either way
                logger.debug("ledger: closing the connection to %s failed", self.location)

    def _leaks(self, exc: BaseException) -> bool:
        text = str(exc)
        return any(secret in text for secret in self._hidden)

    def _error(self, exc: BaseException) -> LedgerStoreError:
        if isinstance(exc, TimeoutError):
            detail = f"no answer within {self._timeout_s:g} s"
        else:
            detail = str(exc).strip() or type(exc).__name__
            for secret in self._hidden:
                detail = detail.replace(secret, "***")
        refused = isinstance(exc, psycopg.errors.DataError | psycopg.errors.IntegrityError)
        kind = LedgerDataError if refused else LedgerStoreError
        return kind(f"ledger database {self.location}: {detail}")


async def _version(connection: Connection) -> int:
    """The schema version; 0 for a new ledger."""
    cursor = await connection.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    exists = await cursor.fetchone()
    if exists is None or not exists[0]:
        return 0
    cursor = await connection.execute("SELECT max(version) FROM schema_version")
    found = await cursor.fetchone()
    return 0 if found is None or found[0] is None else int(found[0])


async def _apply_migrations(connection: Connection) -> Migration:
    # Read first without the lock: a ledger at this version is left alone (no writes, no
    # waiting behind another replica). Otherwise re-read under the lock before changing it.
    current = await _version(connection)
    if current == SCHEMA_VERSION:
        return Migration(current, current)
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        await connection.execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version integer NOT NULL)"
        )
        before = await _version(connection)
        if before > SCHEMA_VERSION:
            raise LedgerStoreError(newer_schema_error(before, SCHEMA_VERSION))
        for statements in MIGRATIONS[before:]:
            for statement in statements:
                await connection.execute(statement)
        if before == 0:
            await connection.execute("DELETE FROM schema_version")
            await connection.execute(
                "INSERT INTO schema_version (version) VALUES (%s)", (SCHEMA_VERSION,)
            )
        elif before < SCHEMA_VERSION:
            await connection.execute("UPDATE schema_version SET version = %s", (SCHEMA_VERSION,))
    return Migration(before, SCHEMA_VERSION)


async def _write(connection: Connection, params: list[tuple[Any, ...]]) -> None:
    async with connection.transaction(), connection.cursor() as cursor:
        await cursor.executemany(_INSERT, params)


async def _query(
    connection: Connection, since: float | None, until: float | None
) -> list[StoredRecord]:
    where, args = window_clause(since, until, "%s")
    cursor = await connection.execute(f"{_SELECT}{where} ORDER BY started_at, id", args)
    return [from_columns(row) for row in await cursor.fetchall()]


async def _summarize(
    connection: Connection, since: float | None, until: float | None, key_id: str | None
) -> dict[str, Any]:
    where, args = window_clause(since, until, "%s", key_id=key_id)
    # Both statements see the same rows (one snapshot); the sorts stay in the server.
    async with connection.transaction():
        await connection.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        cursor = await connection.execute(tally_query(where), args)
        tallies = [tally_of(row) for row in await cursor.fetchall()]
        cursor = await connection.execute(_latency_query(where), [_FRACTIONS, _FRACTIONS, *args])
        latency = {
            route: RouteLatency(percentiles_of(ttft), percentiles_of(total))
            for route, ttft, total in await cursor.fetchall()
        }
    return summary_of(tallies, latency, since=since, until=until)
