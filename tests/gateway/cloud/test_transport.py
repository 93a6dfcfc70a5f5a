"""The aiohttp-backed httpx transport, against real sockets on loopback.

The servers here are raw asyncio TCP servers so that each misbehaviour is
exact: a connection refused, a response that never comes, a body cut short,
a status line that is not HTTP. Each test checks the httpx exception that
httpx's own transport raises in the same situation, so gateway.cloud.failures
maps them unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import json
import socket
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import aiohttp
import httpx
import pytest

from gateway.cloud import CloudClient
from gateway.cloud.transport import AiohttpTransport, _as_httpx_errors, proxy_for
from gateway.errors import UpstreamError, UpstreamTimeoutError
from gateway.settings import CloudSettings

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]
COMPLETION = {
    "id": "x",
    "object": "chat.completion",
    "created": 1,
    "model": "upstream",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
CHAT = {"model": "hybrid", "messages": [{"role": "user", "content": "hi"}]}


class Server:
    """A loopback TCP server that counts connections and runs ``handler`` on each."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.closed_by_peer = asyncio.Event()
        self.requests: list[tuple[bytes, dict[str, str], bytes]] = []
        self.port = 0
        self.handlers: set[asyncio.Task[None]] = set()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.handlers.add(asyncio.current_task())  # type: ignore[arg-type]
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await self.handler(reader, writer)
        finally:
            writer.close()
            self.handlers.discard(asyncio.current_task())  # type: ignore[arg-type]

    async def read_request(self, reader: asyncio.StreamReader) -> bool:
        """One request off the connection (False at EOF: the client closed it)."""
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            self.closed_by_peer.set()
            return False
        line, *fields = head.decode().split("\r\n")
        headers = {}
        for field in fields:
            if field:
                name, _, value = field.partition(":")
                headers[name.strip().lower()] = value.strip()
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append((line.encode(), headers, body))
        return True


@contextlib.asynccontextmanager
async def serving(handler: Callable[[Server], Handler]) -> AsyncIterator[Server]:
    server = Server(lambda r, w: asyncio.sleep(0))
    server.handler = handler(server)
    listener = await asyncio.start_server(server._serve, "127.0.0.1", 0)
    server.port = listener.sockets[0].getsockname()[1]
    try:
        yield server
    finally:
        listener.close()
        for task in list(server.handlers):
            task.cancel()
        await asyncio.gather(*server.handlers, return_exceptions=True)


def respond(body: bytes, *, headers: str = "content-type: application/json\r\n") -> bytes:
    return f"HTTP/1.1 200 OK\r\n{headers}content-length: {len(body)}\r\n\r\n".encode("ascii") + body


def keep_answering(server: Server) -> Handler:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await server.read_request(reader):
            writer.write(respond(json.dumps(COMPLETION).encode()))
            await writer.drain()

    return handle


def transport() -> AiohttpTransport:
    return AiohttpTransport(
        ssl_context=ssl.create_default_context(), max_connections=10, keepalive_expiry_s=15
    )


def client_for(server_port: int, **settings: object) -> CloudClient:
    return CloudClient(
        CloudSettings(
            base_url=f"http://127.0.0.1:{server_port}/v1",
            api_key="sk-transport-test",
            extra_headers={"OpenAI-Organization": "org-1"},
            **settings,  # type: ignore[arg-type]
        )
    )


async def test_requests_reuse_one_keepalive_connection_and_carry_headers_and_body() -> None:
    async with serving(keep_answering) as server:
        client = client_for(server.port)
        try:
            for _ in range(5):
                result = await client.complete("chat", dict(CHAT), response_model="hybrid")
                assert result.body["choices"][0]["message"]["content"] == "hi"
            assert isinstance(client._http._transport, AiohttpTransport)
        finally:
            await client.aclose()
    assert server.connections == 1
    assert len(server.requests) == 5
    line, headers, body = server.requests[0]
    assert line == b"POST /v1/chat/completions HTTP/1.1"
    assert headers["authorization"] == "Bearer sk-transport-test"
    assert headers["openai-organization"] == "org-1"
    assert headers["content-type"] == "application/json"
    assert headers["host"] == f"127.0.0.1:{server.port}"
    assert headers["user-agent"].startswith("python-httpx/")
    sent = json.loads(body)
    assert sent["messages"] == CHAT["messages"] and sent["stream"] is False


async def test_chunked_and_gzip_bodies_are_decoded_as_httpx_would() -> None:
    payload = gzip.compress(json.dumps(COMPLETION).encode())

    def chunked(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            head = "HTTP/1.1 200 OK\r\ncontent-encoding: gzip\r\ntransfer-encoding: chunked\r\n\r\n"
            writer.write(head.encode())
            for start in range(0, len(payload), 7):
                piece = payload[start : start + 7]
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
                await writer.drain()
            writer.write(b"0\r\n\r\n")
            await writer.drain()

        return handle

    async with serving(chunked) as server, httpx.AsyncClient(transport=transport()) as http:
        response = await http.post(f"http://127.0.0.1:{server.port}/", json={})
        assert response.json() == COMPLETION


async def test_an_abandoned_stream_closes_its_connection_at_once() -> None:
    def stalls_mid_stream(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            writer.write(f"{head}transfer-encoding: chunked\r\n\r\n".encode())
            event = b'data: {"choices": [{"index": 0, "delta": {"content": "a"}}]}\n\n'
            writer.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
            await writer.drain()
            await server.read_request(reader)  # returns when the client closes the connection

        return handle

    async with serving(stalls_mid_stream) as server:
        client = client_for(server.port)
        try:
            stream = client.stream("chat", {**CHAT, "stream": True}, response_model="hybrid")
            first = await anext(aiter(stream))
            assert first["choices"][0]["delta"]["content"] == "a"
            await stream.aclose()
            await asyncio.wait_for(server.closed_by_peer.wait(), 5)
            assert client._slots.in_flight == 0
        finally:
            await client.aclose()


async def test_connection_refused_is_a_connect_error() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens here once the socket is closed
    async with httpx.AsyncClient(transport=transport()) as http:
        with pytest.raises(httpx.ConnectError):
            await http.post(f"http://127.0.0.1:{port}/", json={})


async def test_no_answer_within_the_read_timeout_is_a_read_timeout() -> None:
    def silent(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            await reader.read()  # nothing more, until the client hangs up

        return handle

    async with serving(silent) as server, httpx.AsyncClient(transport=transport()) as http:
        with pytest.raises(httpx.ReadTimeout):
            await http.post(f"http://127.0.0.1:{server.port}/", json={}, timeout=0.2)


async def test_a_body_that_stalls_is_a_read_timeout_while_reading() -> None:
    def stalls(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n" + b"x" * 10)
            await writer.drain()
            await reader.read()  # nothing more, until the client hangs up

        return handle

    async with serving(stalls) as server, httpx.AsyncClient(transport=transport()) as http:
        request = http.build_request("POST", f"http://127.0.0.1:{server.port}/", json={})
        request.extensions["timeout"] = httpx.Timeout(0.2).as_dict()
        response = await http.send(request, stream=True)
        try:
            with pytest.raises(httpx.ReadTimeout):
                await response.aread()
        finally:
            await response.aclose()


@pytest.mark.parametrize(
    "reply",
    [
        b"",  # closed without a byte
        b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\nonly part of it",  # body cut short
        b"SPDY/9 hello\r\n\r\n",  # not HTTP
    ],
    ids=["closed-before-response", "closed-mid-body", "malformed-status-line"],
)
async def test_broken_responses_are_remote_protocol_errors(reply: bytes) -> None:
    def broken(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            writer.write(reply)
            await writer.drain()

        return handle

    async with serving(broken) as server, httpx.AsyncClient(transport=transport()) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            response = await http.post(f"http://127.0.0.1:{server.port}/", json={})
            await response.aread()


async def test_the_cloud_client_maps_transport_failures_and_retries_them() -> None:
    """End to end through CloudClient: a connection dropped before any answer is
    retried on a new connection; an upstream that never answers is a 504."""
    attempts = 0

    def flaky(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            nonlocal attempts
            while await server.read_request(reader):
                attempts += 1
                if attempts == 1:
                    return  # dropped without an answer
                writer.write(respond(json.dumps(COMPLETION).encode()))
                await writer.drain()

        return handle

    async with serving(flaky) as server:
        client = client_for(server.port, backoff_initial_s=0.01)
        try:
            result = await client.complete("chat", dict(CHAT), response_model="hybrid")
        finally:
            await client.aclose()
    assert result.attempts == 2
    assert server.connections == 2

    def silent(server: Server) -> Handler:
        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await server.read_request(reader)
            await reader.read()  # nothing more, until the client hangs up

        return handle

    async with serving(silent) as server:
        client = client_for(server.port, read_timeout_s=0.2)
        try:
            with pytest.raises(UpstreamTimeoutError, match="read timeout"):
                await client.complete("chat", dict(CHAT), response_model="hybrid")
        finally:
            await client.aclose()

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = client_for(port, max_attempts=1)
    try:
        with pytest.raises(UpstreamError, match="could not connect"):
            await client.complete("chat", dict(CHAT), response_model="hybrid")
    finally:
        await client.aclose()


@pytest.mark.parametrize(
    ("raised", "expected"),
    [
        (aiohttp.ConnectionTimeoutError(), httpx.ConnectTimeout),
        (aiohttp.SocketTimeoutError(), httpx.ReadTimeout),
        (aiohttp.ServerDisconnectedError(), httpx.RemoteProtocolError),
        (aiohttp.ClientPayloadError("cut"), httpx.RemoteProtocolError),
        (aiohttp.ClientOSError(104, "reset"), httpx.ReadError),
        (aiohttp.InvalidURL("ftp://x"), httpx.UnsupportedProtocol),
        (aiohttp.ClientError("other"), httpx.TransportError),
    ],
)
def test_aiohttp_errors_become_httpx_errors(raised: Exception, expected: type) -> None:
    request = httpx.Request("POST", "http://upstream.test/")
    with pytest.raises(expected) as info, _as_httpx_errors(request):
        raise raised
    assert info.value.__cause__ is raised


def test_one_tls_context_is_built_per_client(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loading the CA bundle per connection stalled the event loop 15-60 ms each time."""
    built: list[ssl.SSLContext] = []
    create = httpx.create_ssl_context

    def counting(*args: object, **kwargs: object) -> ssl.SSLContext:
        context = create(*args, **kwargs)  # type: ignore[arg-type]
        built.append(context)
        return context

    monkeypatch.setattr(httpx, "create_ssl_context", counting)
    client = CloudClient(CloudSettings(base_url="https://cloud.test/v1", api_key="k"))
    transport = client._http._transport
    assert isinstance(transport, AiohttpTransport)
    assert len(built) == 1 and transport._ssl_context is built[0]


def test_a_proxied_upstream_goes_through_httpx_own_transport(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("all_proxy", raising=False)
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    assert proxy_for("https://api.example.com/v1") is None
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.internal:3128")
    assert proxy_for("https://api.example.com/v1") == "http://proxy.internal:3128"
    assert proxy_for("http://api.example.com/v1") is None  # no HTTP_PROXY
    client = CloudClient(CloudSettings(base_url="https://api.example.com/v1", api_key="k"))
    assert not isinstance(client._http._transport, AiohttpTransport)
    monkeypatch.setenv("NO_PROXY", "api.example.com")
    assert proxy_for("https://api.example.com/v1") is None
