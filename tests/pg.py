"""The real PostgreSQL server of the tests, and a switch to take it away.

The server is found through ``GATEWAY_TEST_POSTGRES_URL`` (default: the one on
loopback, database ``test``, as the current OS user). Without a server the
tests that need one skip, with the reason; ``GATEWAY_TEST_REQUIRE_POSTGRES=1``
(set by .ci/run) turns that skip into a failure. Each test gets a schema of its
own, selected through the URL's ``options=-csearch_path=...``, dropped after.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from urllib.parse import quote, urlsplit, urlunsplit

import psycopg
import pytest
from psycopg import sql

from gateway.ledger.postgres import redact_url

URL_VARIABLE = "GATEWAY_TEST_POSTGRES_URL"
DEFAULT_URL = "postgresql://127.0.0.1:5432/test"
REQUIRE_VARIABLE = "GATEWAY_TEST_REQUIRE_POSTGRES"


def server_url() -> str:
    return os.environ.get(URL_VARIABLE) or DEFAULT_URL


def check_server(url: str) -> None:
    """Skip the test (or fail it, when required) if ``url`` cannot be reached."""
    try:
        with psycopg.connect(url, connect_timeout=5) as connection:
            connection.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        reason = (
            f"no PostgreSQL server at {redact_url(url)} ({str(exc).strip().splitlines()[0]}); "
            f"point {URL_VARIABLE} at one"
        )
        if os.environ.get(REQUIRE_VARIABLE) == "1":
            pytest.fail(f"{reason} ({REQUIRE_VARIABLE}=1: the database tests must run)")
        pytest.skip(reason)


def with_options(url: str, **params: str) -> str:
    """``url`` with more query parameters (percent-encoded)."""
    parts = urlsplit(url)
    extra = "&".join(f"{key}={quote(value, safe='')}" for key, value in params.items())
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def in_schema(url: str, schema: str) -> str:
    """``url`` whose sessions create and find tables in ``schema`` (its search_path)."""
    return with_options(url, options=f"-csearch_path={schema}")


@contextlib.contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A new empty schema on the server at ``url``; the URL that uses it. Dropped after."""
    schema = f"ledger_test_{secrets.token_hex(6)}"
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
    try:
        yield in_schema(url, schema)
    finally:
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class TcpProxy:
    """A TCP relay on loopback in front of the server: the database as seen through it
    goes down (``stop``: connections refused, open sessions cut) and comes back (``start``),
    while the server itself keeps running for the other tests."""

    def __init__(self, target_url: str) -> None:
        parts = urlsplit(target_url)
        self._target = (parts.hostname or "127.0.0.1", parts.port or 5432)
        self.port = free_port()
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.StreamWriter] = set()
        self._pipes: set[asyncio.Task[None]] = set()

    def url_for(self, url: str) -> str:
        """``url`` (same user, database and options) through this relay."""
        parts = urlsplit(url)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@127.0.0.1:{self.port}" if userinfo else f"127.0.0.1:{self.port}"
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", self.port)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for writer in list(self._links):
            writer.transport.abort()
        self._links.clear()
        for pipe in list(self._pipes):
            pipe.cancel()
        await asyncio.gather(*self._pipes, return_exceptions=True)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._links |= {writer, upstream_writer}
        for source, sink in ((reader, upstream_writer), (upstream_reader, writer)):
            pipe = asyncio.create_task(self._pipe(source, sink))
            self._pipes.add(pipe)
            pipe.add_done_callback(self._pipes.discard)

    async def _pipe(self, source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
        try:
            while data := await source.read(65536):
                sink.write(data)
                await sink.drain()
        except ConnectionError:
            pass
        finally:
            sink.transport.abort()
            self._links.discard(sink)


class ProxyThread:
    """A TcpProxy on an event loop of its own, for a test whose app runs in another thread
    (TestClient's)."""

    def __init__(self, target_url: str) -> None:
        self.proxy = TcpProxy(target_url)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()

    def start(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.start(), self._loop).result(timeout=30)

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.proxy.stop(), self._loop).result(timeout=30)

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=30)
        self._loop.close()
