"""PostgresStore against the real PostgreSQL server (``postgres_url``: a fresh schema each)."""

from __future__ import annotations

import asyncio
import getpass
import json
import logging
import secrets
import sqlite3
import time
from collections import Counter
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import psycopg
import pytest
from pydantic import ValidationError

from gateway import Settings
from gateway.cli import main
from gateway.ledger.postgres import MIGRATION_LOCK, SCHEMA_VERSION, PostgresStore, redact_url
from gateway.ledger.store import COLUMNS, LedgerStoreError, Migration, SQLiteStore
from gateway.ledger.stores import open_store
from gateway.ledger.summary import summarize
from gateway.ledger.writer import Ledger
from gateway.settings import LedgerSettings
from tests.gateway.ledger.conftest import sample_rows, write_rows
from tests.gateway.ledger.rows import record, row
from tests.gateway.ledger.test_store import EVERY_FIELD_SET, INDEXES, NONES
from tests.gateway.ledger.test_store_summary import approx_sums
from tests.pg import TcpProxy, free_port, with_options

PASSWORD = "s3cret-Pa55"


def _sql(url: str, statement: str, *args: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as connection:
        cursor = connection.execute(statement, args or None)
        return cursor.fetchall() if cursor.description else []


def _ids(url: str) -> list[str]:
    return [r[0] for r in _sql(url, "SELECT request_id FROM records ORDER BY id")]


async def test_table_has_sqlite_columns_with_postgres_types(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    try:
        assert await store.migrate() == Migration(0, SCHEMA_VERSION)
    finally:
        await store.aclose()
    found = _sql(
        postgres_url,
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = 'records' "
        "ORDER BY ordinal_position",
    )
    types = {"TEXT": "text", "REAL": "double precision", "INTEGER": "integer"}
    expected = (
        [("id", "bigint", "NO")]
        + [
            (
                name,
                "boolean" if name == "stream" else types[kind.split()[0]],
                "NO" if "NOT NULL" in kind else "YES",
            )
            for name, kind in COLUMNS
        ]
        + [("record_uid", "text", "YES")]
    )
    assert found == expected
    indexes = {
        r[0]
        for r in _sql(
            postgres_url, "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
        )
    }
    assert INDEXES <= indexes
    assert "records_route_started_at" not in indexes


async def test_migration_is_idempotent(postgres_url: str) -> None:
    first = PostgresStore(postgres_url)
    try:
        assert await first.migrate() == Migration(0, SCHEMA_VERSION)
        assert await first.migrate() == Migration(SCHEMA_VERSION, SCHEMA_VERSION)
        await first.write([row(request_id="kept")])
    finally:
        await first.aclose()
    second = PostgresStore(postgres_url)  # another replica, later
    try:
        assert await second.migrate() == Migration(SCHEMA_VERSION, SCHEMA_VERSION)
        assert [r.record.request_id for r in await second.query()] == ["kept"]
    finally:
        await second.aclose()
    assert _sql(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]


async def test_a_version_2_ledger_gets_the_client_key_index(postgres_url: str) -> None:
    """Version 3 indexes (key_id, started_at) for a client key's /v1/usage."""
    from gateway.ledger.postgres import MIGRATIONS

    for statement in (*MIGRATIONS[0], *MIGRATIONS[1]):
        _sql(postgres_url, statement)
    _sql(postgres_url, "CREATE TABLE schema_version (version integer NOT NULL)")
    _sql(postgres_url, "INSERT INTO schema_version VALUES (2)")
    store = PostgresStore(postgres_url)
    try:
        assert await store.migrate() == Migration(2, SCHEMA_VERSION)
        await store.write([EVERY_FIELD_SET, NONES])
        found = await store.summarize(since=None, until=None, key_id="key-7")
    finally:
        await store.aclose()
    assert found["requests"] == 1 and found["by_route"]["local->cloud"] == 1
    ((definition,),) = _sql(
        postgres_url,
        "SELECT indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND indexname = 'records_key_id_started_at'",
    )
    assert definition.endswith(" USING btree (key_id, started_at)")


async def test_concurrent_migrations_take_turns(postgres_url: str) -> None:
    """Two replicas starting at once: both wait for the migration lock, one migrates."""
    holder = await psycopg.AsyncConnection.connect(postgres_url)
    try:
        # Hold the lock so that both migrations are surely waiting for it at the same time.
        await holder.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        stores = [PostgresStore(postgres_url), PostgresStore(postgres_url)]
        migrations = [asyncio.create_task(store.migrate()) for store in stores]
        deadline = time.monotonic() + 30
        while _waiting_for_migration_lock(postgres_url) < 2:
            assert time.monotonic() < deadline, "the migrations never queued for the lock"
            assert not any(m.done() for m in migrations), "a migration did not wait"
            await asyncio.sleep(0.02)
        await holder.rollback()
        results = await asyncio.gather(*migrations)
        assert sorted((m.before, m.after) for m in results) == [
            (0, SCHEMA_VERSION),
            (SCHEMA_VERSION, SCHEMA_VERSION),
        ]
        for n, store in enumerate(stores):
            await store.write([row(request_id=f"from-{n}")])
            await store.aclose()
    finally:
        await holder.close()
    assert _sql(postgres_url, "SELECT version FROM schema_version") == [(SCHEMA_VERSION,)]
    assert sorted(_ids(postgres_url)) == ["from-0", "from-1"]


def _waiting_for_migration_lock(url: str) -> int:
    # An advisory lock on a bigint key shows its high and low 32 bits as classid and objid.
    rows = _sql(
        url,
        "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
        "AND classid::bigint = %s AND objid::bigint = %s",
        MIGRATION_LOCK >> 32,
        MIGRATION_LOCK & 0xFFFFFFFF,
    )
    return int(rows[0][0])


async def test_a_role_without_create_rights_uses_a_current_ledger(
    postgres_server: str, postgres_url: str
) -> None:
    """Replicas may run as a role that can only read and insert, once the schema exists."""
    store = PostgresStore(postgres_url)
    try:
        await store.migrate()
    finally:
        await store.aclose()
    role, password = f"ledger_writer_{secrets.token_hex(4)}", secrets.token_hex(8)
    ((schema,),) = _sql(postgres_url, "SELECT current_schema()")
    _sql(postgres_server, f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
    try:
        _sql(postgres_url, f"GRANT USAGE ON SCHEMA {schema} TO {role}")
        _sql(postgres_url, f"GRANT SELECT, INSERT ON records, schema_version TO {role}")
        assert _sql(
            postgres_url, f"SELECT has_schema_privilege('{role}', '{schema}', 'CREATE')"
        ) == [(False,)]
        parts = urlsplit(postgres_url)
        netloc = f"{role}:{password}@{parts.netloc.rpartition('@')[2]}"
        limited = PostgresStore(urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")))
        try:
            assert await limited.migrate() == Migration(SCHEMA_VERSION, SCHEMA_VERSION)
            await limited.write([NONES])
            assert await limited.query() == [NONES]
        finally:
            await limited.aclose()
    finally:
        _sql(postgres_server, f"DROP OWNED BY {role}")
        _sql(postgres_server, f"DROP ROLE {role}")


async def test_a_newer_schema_is_refused(postgres_url: str) -> None:
    store = PostgresStore(postgres_url)
    await store.write([NONES])
    await store.aclose()
    _sql(postgres_url, "UPDATE schema_version SET version = 99")
    store = PostgresStore(postgres_url)
    try:
        with pytest.raises(
            LedgerStoreError,
            match=f"schema version 99, this gateway knows version {SCHEMA_VERSION}",
        ):
            await store.query()
    finally:
        await store.aclose()


def test_redact_url() -> None:
    assert redact_url("postgresql://gw:pw@db:5432/ledger") == "postgresql://gw:***@db:5432/ledger"
    assert redact_url("postgresql://gw@db/ledger") == "postgresql://gw@db/ledger"
    assert redact_url("postgresql://db/ledger?user=gw&password=pw&sslmode=require") == (
        "postgresql://db/ledger?user=gw&password=***&sslmode=require"
    )
    assert (
        redact_url("postgres://gw:p%40ss@h1:5432,h2:5432/l")
        == "postgres://gw:***@h1:5432,h2:5432/l"
    )


async def test_unreachable_database_fails_without_showing_the_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()  # nothing listens there
    url = f"postgresql://gw:{PASSWORD}@127.0.0.1:{port}/test?sslpassword={PASSWORD}x"
    shown = f"postgresql://gw:***@127.0.0.1:{port}/test?sslpassword=***"
    store = PostgresStore(url)
    assert repr(store) == f"PostgresStore({shown!r})"
    ledger = Ledger(store, LedgerSettings(url=url), cloud_model="gpt-4o-mini", close_timeout_s=0)
    try:
        with pytest.raises(LedgerStoreError) as failure:
            await store.write([NONES])
        assert str(failure.value).startswith(f"ledger database {shown}: connection failed")
        assert "Connection refused" in str(failure.value)
        with caplog.at_level(logging.DEBUG):
            ledger.record(record(request_id="queued"))
            await ledger.flush()
        assert ledger.queue_depth == 1 and ledger.write_failures == 1
        assert shown in caplog.text
    finally:
        await ledger.aclose()  # gives up on the queued record at once (close_timeout_s=0)
    for text in (str(failure.value), repr(failure.value.__cause__), caplog.text, repr(ledger)):
        assert PASSWORD not in text


async def test_a_password_libpq_would_quote_is_masked() -> None:
    # libpq quotes the offending part of a malformed URL in its error message.
    store = PostgresStore("postgresql://gw:bad%zzpass@127.0.0.1:5432/test")
    with pytest.raises(LedgerStoreError) as failure:
        await store.query()
    await store.aclose()
    assert "bad%zzpass" not in str(failure.value) and "%zz" not in str(failure.value)
    assert failure.value.__cause__ is None  # the driver's own message quoted it


def test_the_url_is_a_secret_in_settings() -> None:
    url = f"postgresql://gw:{PASSWORD}@db:5432/ledger"
    settings = Settings(ledger={"url": url})
    assert settings.ledger.url is not None and settings.ledger.url.get_secret_value() == url
    assert PASSWORD not in repr(settings) and PASSWORD not in str(settings.ledger)
    assert PASSWORD not in settings.model_dump_json()
    with pytest.raises(ValidationError) as refused:
        Settings(ledger={"url": f"mysql://gw:{PASSWORD}@db/ledger"})
    assert "ledger.url" in str(refused.value) and "postgresql://" in str(refused.value)
    assert PASSWORD not in str(refused.value)
    assert Settings(ledger={"url": "  "}).ledger.url is None


async def test_open_store_picks_the_backend(tmp_path: Path, postgres_url: str) -> None:
    sqlite = open_store(LedgerSettings(path=tmp_path / "l.sqlite3"))
    postgres = open_store(LedgerSettings(path=tmp_path / "l.sqlite3", url=postgres_url))
    try:
        assert isinstance(sqlite, SQLiteStore) and isinstance(postgres, PostgresStore)
    finally:
        await sqlite.aclose()
        await postgres.aclose()


async def test_writer_keeps_records_while_the_database_is_down(postgres_url: str) -> None:
    proxy = TcpProxy(postgres_url)  # the database as the gateway sees it: down at first
    url = proxy.url_for(postgres_url)
    settings = LedgerSettings(url=url, flush_interval_s=3600, batch_size=2, max_queue=100)
    ledger = Ledger(PostgresStore(url), settings, cloud_model="gpt-4o-mini")
    try:
        for n in range(5):
            ledger.record(record(request_id=f"a{n}", started_at=1000.0 + n))
        await ledger.flush()
        assert (ledger.queue_depth, ledger.written, ledger.write_failures) == (5, 0, 1)

        await proxy.start()
        await ledger.flush()
        assert (ledger.queue_depth, ledger.written) == (0, 5)
        assert _ids(postgres_url) == [f"a{n}" for n in range(5)]

        # Down again with a session open: the connection breaks, the next one succeeds.
        for n in range(3):
            ledger.record(record(request_id=f"b{n}", started_at=2000.0 + n))
        await proxy.stop()
        await ledger.flush()
        assert (ledger.queue_depth, ledger.written, ledger.write_failures) == (3, 5, 2)
        await proxy.start()
        await ledger.flush()
        assert (ledger.queue_depth, ledger.written, ledger.dropped) == (0, 8, 0)
    finally:
        await ledger.aclose()
        await proxy.stop()
    assert _ids(postgres_url) == [f"a{n}" for n in range(5)] + [f"b{n}" for n in range(3)]


async def test_writer_reconnects_after_the_server_ends_its_session(postgres_url: str) -> None:
    """The background writer, as in the gateway: a killed session costs one retry."""
    url = with_options(postgres_url, application_name="ledger-reconnect-test")
    settings = LedgerSettings(url=url, flush_interval_s=0.01, batch_size=3)
    ledger = Ledger(PostgresStore(url), settings, cloud_model="gpt-4o-mini", backoff_initial_s=0.01)
    await ledger.start()
    try:
        for n in range(4):
            ledger.record(record(request_id=f"a{n}", started_at=1000.0 + n))
        await _until(lambda: ledger.written == 4)
        ended = _sql(
            postgres_url,
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name = 'ledger-reconnect-test'",
        )
        assert ended == [(True,)]
        for n in range(4):
            ledger.record(record(request_id=f"b{n}", started_at=2000.0 + n))
        await _until(lambda: ledger.written == 8)
        assert ledger.write_failures == 1 and ledger.dropped == 0
    finally:
        await ledger.aclose()
    ids = _ids(postgres_url)
    assert Counter(ids) == Counter([f"a{n}" for n in range(4)] + [f"b{n}" for n in range(4)])
    assert ids[4:] == [f"b{n}" for n in range(4)]


async def _until(condition: Any) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        assert time.monotonic() < deadline, "gave up waiting"
        await asyncio.sleep(0.01)


async def test_an_unanswering_database_fails_the_batch_at_the_deadline() -> None:
    accepted: list[asyncio.StreamWriter] = []  # and never answered
    silent = await asyncio.start_server(lambda _, writer: accepted.append(writer), "127.0.0.1", 0)
    port = silent.sockets[0].getsockname()[1]
    store = PostgresStore(f"postgresql://127.0.0.1:{port}/test", timeout_s=0.2)
    try:
        with pytest.raises(LedgerStoreError, match="no answer within 0.2 s"):
            await store.write([NONES])
        assert len(accepted) == 1
    finally:
        await store.aclose()
        silent.close()
        for writer in accepted:
            writer.close()


async def test_summaries_over_postgres_equal_summaries_over_sqlite(
    tmp_path: Path, postgres_url: str
) -> None:
    rows = sample_rows() + [EVERY_FIELD_SET, NONES]
    store = PostgresStore(postgres_url)
    try:
        await store.write(rows)
        from_postgres = await store.query()
        window = await store.query(since=rows[1].record.started_at, until=rows[4].record.started_at)
    finally:
        await store.aclose()
    sqlite = SQLiteStore(tmp_path / "l.sqlite3")
    try:
        await sqlite.write(rows)
        from_sqlite = await sqlite.query()
        sqlite_window = await sqlite.query(
            since=rows[1].record.started_at, until=rows[4].record.started_at
        )
    finally:
        await sqlite.aclose()
    assert from_postgres == from_sqlite
    assert len(window) == 3 and window == sqlite_window
    assert summarize(from_postgres, since=None, until=None) == summarize(
        from_sqlite, since=None, until=None
    )
    store = PostgresStore(postgres_url)
    sqlite = SQLiteStore(tmp_path / "l.sqlite3")
    try:
        in_sql = await store.summarize(since=None, until=None)
        assert in_sql == approx_sums(await sqlite.summarize(since=None, until=None))
        assert in_sql == approx_sums(summarize(from_sqlite, since=None, until=None))
    finally:
        await store.aclose()
        await sqlite.aclose()


def _with_password(url: str) -> tuple[str, str]:
    """``url`` with a password, and the password: the server's own, or one that trust
    authentication (as on the test server) ignores."""
    parts = urlsplit(url)
    if parts.password:
        return url, unquote(parts.password)
    user = parts.username or getpass.getuser()
    netloc = f"{user}:{PASSWORD}@{parts.netloc.rpartition('@')[2]}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, "")), PASSWORD


def _migrate(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    status = main(["ledger", "migrate", *args])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def test_cli_migrate_and_report_on_postgres(
    tmp_path: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    url, password = _with_password(postgres_url)
    monkeypatch.setenv("GATEWAY_LEDGER__URL", url)
    shown = redact_url(url)
    assert _migrate(capsys) == (
        0,
        f"ledger: {shown}\nschema version before: 0\nschema version after: {SCHEMA_VERSION}\n",
        "",
    )
    assert _migrate(capsys)[1].endswith(
        f"schema version before: {SCHEMA_VERSION}\nschema version after: {SCHEMA_VERSION}\n"
    )

    async def fill() -> None:
        store = PostgresStore(url)
        await store.write(sample_rows())
        await store.aclose()

    asyncio.run(fill())
    write_rows(tmp_path / "same.sqlite3", sample_rows())
    assert main(["report", "--since", "all", "--json"]) == 0
    over_postgres = json.loads(capsys.readouterr().out)
    assert main(["report", "--since", "all", "--json", "--db", str(tmp_path / "same.sqlite3")]) == 0
    # The same numbers; money sums to the last bits may differ (each database adds its way).
    assert over_postgres == approx_sums(json.loads(capsys.readouterr().out))
    assert over_postgres["requests"] == 6
    assert main(["report", "--since", "all"]) == 0
    table = capsys.readouterr().out
    assert table.startswith(f"ledger: {shown}\n") and "requests: 6" in table
    assert password not in table and password not in shown


def test_cli_migrate_reports_an_unreachable_database(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "GATEWAY_LEDGER__URL", f"postgresql://gw:{PASSWORD}@127.0.0.1:{free_port()}/test"
    )
    status, out, err = _migrate(capsys)
    assert status == 1
    assert err.startswith("cannot migrate the ledger: ledger database postgresql://gw:***@")
    assert PASSWORD not in out + err
    monkeypatch.setenv("GATEWAY_LEDGER__URL", f"mysql://gw:{PASSWORD}@db/ledger")
    status, out, err = _migrate(capsys)
    assert status == 2 and "url" in err and PASSWORD not in err


def test_cli_migrate_on_sqlite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "ledger.sqlite3"
    assert _migrate(capsys, "--db", str(db)) == (
        0,
        f"ledger: {db}\nschema version before: 0\nschema version after: {SCHEMA_VERSION}\n",
        "",
    )
    assert _migrate(capsys, "--db", str(db))[1].endswith(
        f"before: {SCHEMA_VERSION}\nschema version after: {SCHEMA_VERSION}\n"
    )
    with sqlite3.connect(db) as connection:
        assert connection.execute("SELECT version FROM schema_version").fetchall() == [
            (SCHEMA_VERSION,)
        ]
    connection.close()


async def test_writing_a_batch_again_stores_it_once(postgres_url: str) -> None:
    """What the writer does after a commit whose acknowledgement was lost."""
    store = PostgresStore(postgres_url)
    batch = [row(request_id="once-a"), row(request_id="once-b")]
    try:
        await store.write(batch)
        await store.write(batch)
        await store.write([row(request_id="once-a")])  # a new record with a repeated id is kept
        ids = sorted(r.record.request_id for r in await store.query())
    finally:
        await store.aclose()
    assert ids == ["once-a", "once-a", "once-b"]


async def test_a_row_the_database_refuses_is_dropped_alone(postgres_url: str) -> None:
    # A NOT NULL column left empty (a bug elsewhere): IntegrityError, a refusal no
    # retry can fix, so only that row is dropped and the others are written.
    ledger = Ledger(PostgresStore(postgres_url), LedgerSettings(), cloud_model="gpt-4o-mini")
    for n in range(3):
        ledger.record(record(request_id=f"pg-{n}", total_seconds=None if n == 1 else 0.5))
    await ledger.flush()
    assert (ledger.written, ledger.dropped, ledger.queue_depth) == (2, 1, 0)
    await ledger.aclose()
    assert _ids(postgres_url) == ["pg-0", "pg-2"]
