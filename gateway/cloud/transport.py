"""An httpx transport whose connections are aiohttp's.

The cloud client speaks httpx (its API, its errors, ``httpx.MockTransport``
in tests); this transport only moves the bytes. httpx's own stack (httpcore,
anyio streams, h11) cost about 0.65 ms of CPU per request on the 2-core
bench VM; this one about 0.3 ms, and the gateway's cloud route is CPU-bound
there (bench/cloud_overhead.py). aiohttp parses HTTP in C (llhttp) and keeps
a connection pool per session.

What httpx would have done is kept:

* timeouts: ``connect`` bounds DNS and the TCP/TLS handshake, ``read`` each
  wait for data (per chunk, as in httpx), both from the request's
  ``timeout`` extension; the pool wait is the client's (CloudClient bounds
  requests in flight itself);
* errors are httpx's: ConnectError, ConnectTimeout, ReadTimeout, ReadError,
  RemoteProtocolError, so gateway.cloud.failures maps them unchanged;
* no redirects, no decompression (httpx decodes ``content-encoding``), no
  cookies, no netrc, no proxy (``proxy_for`` sends a proxied upstream through
  httpx's own transport instead);
* a response not read to its end closes its connection instead of returning
  it to the pool, so an abandoned stream frees the upstream at once.
"""

from __future__ import annotations

import ssl
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import aiohttp
import httpx


@contextmanager
def _as_httpx_errors(request: httpx.Request) -> Iterator[None]:
    """aiohttp's exceptions as the httpx exceptions httpx's own transport raises."""
    try:
        yield
    except httpx.HTTPError:
        raise
    except aiohttp.ConnectionTimeoutError as exc:
        raise httpx.ConnectTimeout(str(exc) or "connect timeout", request=request) from exc
    except aiohttp.ServerTimeoutError as exc:  # SocketTimeoutError: a read took too long
        raise httpx.ReadTimeout(str(exc) or "read timeout", request=request) from exc
    except aiohttp.ClientConnectorError as exc:  # refused, DNS, TLS handshake
        raise httpx.ConnectError(str(exc), request=request) from exc
    except (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError) as exc:
        # Closed before a response, or mid-body: httpx says RemoteProtocolError for both.
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc
    except aiohttp.ClientResponseError as exc:  # an unparseable status line or headers
        raise httpx.RemoteProtocolError(exc.message, request=request) from exc
    except (aiohttp.ClientOSError, aiohttp.ClientConnectionError) as exc:  # reset, broken pipe
        raise httpx.ReadError(str(exc), request=request) from exc
    except aiohttp.InvalidURL as exc:
        raise httpx.UnsupportedProtocol(str(exc), request=request) from exc
    except aiohttp.ClientError as exc:
        raise httpx.TransportError(str(exc), request=request) from exc


class _Body(httpx.AsyncByteStream):
    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        with _as_httpx_errors(self._request):
            async for data in self._response.content.iter_any():
                yield data

    async def aclose(self) -> None:
        response = self._response
        if response.content.at_eof():
            response.release()  # back to the pool for the next request
        else:
            response.close()  # unread bytes: the connection cannot be reused


class AiohttpTransport(httpx.AsyncBaseTransport):
    """One aiohttp session (created on first use, inside the event loop)."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext,
        max_connections: int,
        keepalive_expiry_s: float,
    ) -> None:
        self._ssl_context = ssl_context
        self._max_connections = max_connections
        self._keepalive_expiry_s = keepalive_expiry_s
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    def _open(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RuntimeError("the transport has been closed")
        connector = aiohttp.TCPConnector(
            limit=self._max_connections,
            limit_per_host=0,
            keepalive_timeout=self._keepalive_expiry_s,
            ssl=self._ssl_context,  # built once: loading CA files per connection stalls
        )
        return aiohttp.ClientSession(
            connector=connector,
            timeout=aiohttp.ClientTimeout(total=None),
            auto_decompress=False,
            cookie_jar=aiohttp.DummyCookieJar(),
            trust_env=False,
        )

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        session = self._session
        if session is None:
            session = self._session = self._open()
        timeouts = request.extensions.get("timeout", {})
        connect, read = timeouts.get("connect"), timeouts.get("read")
        with _as_httpx_errors(request):
            response = await session.request(
                request.method,
                str(request.url),
                headers=request.headers.multi_items(),
                data=await request.aread() or None,
                allow_redirects=False,
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=connect, sock_connect=connect, sock_read=read
                ),
            )
        return httpx.Response(
            response.status,
            headers=response.raw_headers,
            stream=_Body(response, request),
            request=request,
            extensions={
                "http_version": b"HTTP/1.1",
                "reason_phrase": (response.reason or "").encode("ascii", "replace"),
            },
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._session is not None:
            await self._session.close()


def proxy_for(url: str) -> str | None:
    """The proxy the environment (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY, NO_PROXY) sets for
    ``url``, or None: httpx's transport then carries the traffic, as it always did."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(parts.scheme) or proxies.get("all")
    if not proxy or urllib.request.proxy_bypass(parts.hostname or ""):
        return None
    return proxy
