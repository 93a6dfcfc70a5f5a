"""The cloud upstream: an OpenAI-compatible API, called through one httpx client.

httpx is the interface (requests, errors, MockTransport in tests); the
connections underneath are aiohttp's (gateway.cloud.transport), for speed.

Every call is bounded three ways: httpx's connect timeout, its read timeout
(per chunk), and a total deadline over the whole request (retries, waits and,
for a stream, every chunk up to ``[DONE]``), because an upstream that drips a
byte a second never trips a per-chunk timeout. Retries happen only before the
first chunk reaches the caller. The circuit breaker counts whole requests.

Where traffic goes and with which key comes only from settings: the payload's
fields go into the body, never into the URL or headers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from typing import Any, Literal

import httpx

from gateway import jsonio
from gateway.cloud import failures
from gateway.cloud.breaker import CircuitBreaker, Permit
from gateway.cloud.failures import Failure
from gateway.cloud.pool import RequestSlots
from gateway.cloud.results import CloudResult, CloudUsage, usage_from
from gateway.cloud.retry import RetryPolicy
from gateway.cloud.sse_parse import iter_chunks, iter_lines
from gateway.cloud.transport import AiohttpTransport, proxy_for
from gateway.errors import (
    CloudUnavailableError,
    InvalidRequestError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
)
from gateway.settings import CloudSettings

logger = logging.getLogger(__name__)

Endpoint = Literal["chat", "text"]
Outcome = Literal["success", "failure", "unknown"]

_PATHS: dict[Endpoint, str] = {"chat": "/chat/completions", "text": "/completions"}
# Bodies are encoded with orjson (httpx's json= uses the json module).
_JSON = {"Content-Type": "application/json"}
_SSE = {**_JSON, "Accept": "text/event-stream"}


class _NoCookies(httpx.Cookies):
    """Cookies that are never kept, so never sent back."""

    def extract_cookies(self, response: httpx.Response) -> None:
        return None


class _Client(httpx.AsyncClient):
    """The gateway is not a browser: an upstream's Set-Cookie is neither kept nor sent back
    (one client serves every caller). httpx parses every response's cookies through
    urllib's request and email objects: 6% of the cloud route's instructions."""

    @property
    def cookies(self) -> httpx.Cookies:
        return _NoCookies()

    @cookies.setter
    def cookies(self, cookies: object) -> None:
        return None


def _outcome(exc: BaseException | None) -> Outcome:
    """What a request's end says about the upstream's health (see gateway.cloud.breaker)."""
    if exc is None or isinstance(exc, InvalidRequestError | UpstreamRateLimitedError):
        return "success"
    if isinstance(exc, UpstreamError | UpstreamTimeoutError):
        return "failure"
    return "unknown"


class CloudClient:
    def __init__(
        self,
        settings: CloudSettings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._settings = settings
        self._clock = clock
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._wall_clock = wall_clock
        self._key = settings.resolved_api_key()
        self._policy = RetryPolicy(
            max_attempts=settings.max_attempts,
            backoff_initial_s=settings.backoff_initial_s,
            backoff_max_s=settings.backoff_max_s,
            budget_s=settings.retry_budget_s,
        )
        self._breaker = CircuitBreaker(
            failure_threshold=settings.breaker_failures,
            cooldown_s=settings.breaker_cooldown_s,
            clock=clock,
        )
        headers = dict(settings.extra_headers)
        if self._key:
            # httpx masks Authorization in reprs of its Headers.
            headers["Authorization"] = f"Bearer {self._key}"
        timeout = httpx.Timeout(
            connect=settings.connect_timeout_s,
            read=settings.read_timeout_s,
            write=settings.read_timeout_s,
            pool=settings.connect_timeout_s,
        )
        if settings.max_keepalive_connections is not None:
            logger.warning(
                "GATEWAY_CLOUD__MAX_KEEPALIVE_CONNECTIONS is deprecated and ignored: idle "
                "connections close after GATEWAY_CLOUD__KEEPALIVE_EXPIRY_S"
            )
        if transport is None and proxy_for(settings.base_url or "") is None:
            transport = AiohttpTransport(
                # httpx's defaults (certifi, SSL_CERT_FILE), built once for every connection.
                ssl_context=httpx.create_ssl_context(),
                max_connections=settings.max_connections,
                keepalive_expiry_s=settings.keepalive_expiry_s,
            )
        elif transport is None:
            logger.info("a proxy is configured for the cloud upstream: using httpx's transport")
        self._http = _Client(
            headers=headers,
            timeout=timeout,
            # Only used by httpx's own transport (behind a proxy).
            limits=httpx.Limits(
                max_connections=settings.max_connections,
                max_keepalive_connections=settings.max_connections,
                keepalive_expiry=settings.keepalive_expiry_s,
            ),
            transport=transport,
            # A redirect would be the upstream choosing where our traffic goes.
            follow_redirects=False,
        )
        # Requests are built here, not by AsyncClient.build_request (URL joins, header and
        # cookie merging), nor from ``content=`` (httpx then sets Host and Content-Length one
        # header at a time, 12-14 us for the Request alone against 2-4 us this way). The
        # URLs, headers and timeouts are the same for every request.
        self._urls: dict[Endpoint, httpx.URL] = (
            {e: httpx.URL(settings.base_url + path) for e, path in _PATHS.items()}
            if settings.base_url is not None
            else {}
        )
        # Host first, as httpx orders it; every endpoint shares the base URL's host.
        host = [(b"Host", httpx.URL(settings.base_url).netloc)] if settings.base_url else []
        self._headers: dict[bool, list[tuple[bytes, bytes]]] = {}
        for stream in (False, True):
            merged = httpx.Headers(self._http.headers)
            merged.update(_SSE if stream else _JSON)  # as build_request merges: case-blind
            self._headers[stream] = [*host, *merged.raw]
        self._extensions = {"timeout": timeout.as_dict()}
        # A full pool is local saturation: fail fast instead of queueing.
        self._slots = RequestSlots(settings.max_connections, wait_s=settings.connect_timeout_s)

    def __repr__(self) -> str:
        return f"CloudClient(base_url={self._settings.base_url!r}, model={self._settings.model!r})"

    async def complete(
        self, endpoint: Endpoint, payload: dict[str, Any], *, response_model: str
    ) -> CloudResult:
        """One non-streamed completion; raises a GatewayError subclass on failure."""
        url = self._url(endpoint)
        permit = self._breaker.acquire()
        body = self._body(payload, stream=False)
        started = self._clock()
        try:
            scope = asyncio.timeout(self._settings.total_timeout_s)
            try:
                async with scope:
                    response, attempts = await self._post(url, body, permit, started)
            except TimeoutError as exc:
                if not scope.expired():
                    raise
                failures.deadline_exceeded(self._settings.total_timeout_s, exc).raise_error()
            answer = _answer_of(response, response_model)
        except BaseException as exc:
            self._settle(permit, _outcome(exc))
            raise
        self._settle(permit, "success")
        seconds = self._clock() - started
        logger.debug("cloud %s answered in %.3fs, %d attempt(s)", endpoint, seconds, attempts)
        return CloudResult(answer, usage_from(answer.get("usage")), attempts, seconds)

    def stream(
        self, endpoint: Endpoint, payload: dict[str, Any], *, response_model: str
    ) -> CloudStream:
        """A streamed completion; the upstream is contacted on the first ``__anext__``.

        Fails at once (CloudUnavailableError) if no cloud is configured or the
        circuit is open, so the caller can still answer with a status code.
        """
        url = self._url(endpoint)
        self._breaker.check()
        return CloudStream(self, url, self._body(payload, stream=True), response_model)

    def breaker_state(self) -> dict[str, Any]:
        return self._breaker.snapshot()

    async def aclose(self) -> None:
        await self._http.aclose()  # closes the transport too

    def _url(self, endpoint: Endpoint) -> httpx.URL:
        url = self._urls.get(endpoint)
        if url is None:
            raise CloudUnavailableError("no cloud upstream is configured")
        return url

    def _request(self, url: httpx.URL, body: dict[str, Any], *, stream: bool) -> httpx.Request:
        """The request httpx would build for ``post(url, content=...)``, headers included."""
        content = jsonio.dumps(body)
        return httpx.Request(
            "POST",
            url,
            headers=[*self._headers[stream], (b"Content-Length", str(len(content)).encode())],
            stream=httpx.ByteStream(content),
            extensions=self._extensions,
        )

    def _body(self, payload: dict[str, Any], *, stream: bool) -> dict[str, Any]:
        body = {**payload, "model": self._settings.model, "stream": stream}
        if stream:
            options = payload.get("stream_options")
            # Always ask for usage: the caller needs it whether or not its client did.
            body["stream_options"] = {
                **(options if isinstance(options, dict) else {}),
                "include_usage": True,
            }
        else:
            # OpenAI refuses stream_options on a non-streamed request.
            body.pop("stream_options", None)
        return body

    async def _post(
        self, url: httpx.URL, body: dict[str, Any], permit: Permit, started: float
    ) -> tuple[httpx.Response, int]:
        attempts, waited = 0, 0.0
        while True:
            attempts += 1
            try:
                async with self._slots.slot():
                    response = await self._http.send(self._request(url, body, stream=False))
            except httpx.HTTPError as exc:
                failure = failures.from_transport_error(exc)
            else:
                if response.is_success:
                    return response, attempts
                failure = self._failure_of(response)
            waited += await self._pause(failure, attempts, waited, started, permit)

    def _failure_of(self, response: httpx.Response) -> Failure:
        return failures.from_response(
            response.status_code,
            response.headers,
            response.content,
            now=self._wall_clock(),
            secret=self._key,
        )

    async def _pause(
        self, failure: Failure, attempts: int, waited: float, started: float, permit: Permit
    ) -> float:
        """Wait before the next attempt and return the seconds waited, or raise the failure."""
        delay: float | None = None
        # A half-open probe is one request, not a retry storm against a sick upstream.
        if failure.retryable and not permit.probe:
            delay = self._policy.delay(
                attempts=attempts, retry_after=failure.retry_after, waited=waited, rng=self._rng
            )
        if delay is not None and self._clock() + delay - started >= self._settings.total_timeout_s:
            delay = None
        if delay is None:
            failure.raise_error()
        logger.info(
            "cloud attempt %d/%d failed (%s); retrying in %.2fs",
            attempts,
            self._policy.max_attempts,
            failure.reason,
            delay,
        )
        await self._sleep(delay)
        return delay

    def _settle(self, permit: Permit, outcome: Outcome) -> None:
        if outcome == "success":
            self._breaker.record_success(permit)
        elif outcome == "failure":
            self._breaker.record_failure(permit)
        else:
            self._breaker.release(permit)


@contextlib.asynccontextmanager
async def _sent(http: httpx.AsyncClient, request: httpx.Request) -> AsyncIterator[httpx.Response]:
    """``AsyncClient.stream`` for a request built already."""
    response = await http.send(request, stream=True)
    try:
        yield response
    finally:
        await response.aclose()


def _answer_of(response: httpx.Response, response_model: str) -> dict[str, Any]:
    try:
        answer = jsonio.loads(response.content)
    except ValueError as exc:
        raise UpstreamError("the cloud upstream sent a malformed JSON body") from exc
    if not isinstance(answer, dict) or not isinstance(answer.get("choices"), list):
        raise UpstreamError("the cloud upstream's answer is not a completion")
    answer["model"] = response_model
    return answer


class CloudStream:
    """Parsed upstream chunks, ``model`` rewritten, up to ``[DONE]``.

    Chunks are yielded as the upstream sent them (``usage: null`` included);
    the usage-only chunk (``choices == []``) is not yielded but fills
    :attr:`usage`. Errors before the first chunk are retried; after it they
    are raised from the iterator (UpstreamError / UpstreamTimeoutError), never
    retried. :meth:`aclose` closes the upstream connection; it is idempotent.
    """

    def __init__(
        self, client: CloudClient, url: httpx.URL, body: dict[str, Any], response_model: str
    ) -> None:
        #: filled when the upstream reports usage; None if it never does
        self.usage: CloudUsage | None = None
        #: HTTP attempts made so far
        self.attempts = 0
        self._client = client
        self._url = url
        self._body = body
        self._response_model = response_model
        self._chunks: AsyncGenerator[dict[str, Any], None] | None = None
        self._permit: Permit | None = None
        self._started = 0.0
        self._yielded = False
        self._finished = False

    def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        return self

    async def __anext__(self) -> dict[str, Any]:
        if self._finished:
            raise StopAsyncIteration
        client = self._client
        if self._chunks is None:
            try:
                self._permit = client._breaker.acquire()
            except CloudUnavailableError:
                self._finished = True
                raise
            self._started = client._clock()
            self._chunks = self._relay()
        total = client._settings.total_timeout_s
        scope = asyncio.timeout(max(0.0, total - (client._clock() - self._started)))
        try:
            async with scope:
                return await anext(self._chunks)
        except StopAsyncIteration:
            self._finish("success")
            raise
        except TimeoutError as exc:
            if not scope.expired():
                self._finish(self._outcome(exc))
                raise
            self._finish("failure")
            failures.deadline_exceeded(total, exc).raise_error()
        except BaseException as exc:
            self._finish(self._outcome(exc))
            raise

    async def aclose(self) -> None:
        if self._chunks is not None:
            await self._chunks.aclose()
        self._finish("success" if self._yielded else "unknown")

    def _outcome(self, exc: BaseException | None) -> Outcome:
        outcome = _outcome(exc)
        # The caller stopped reading (or was cancelled) after the upstream had answered.
        return "success" if outcome == "unknown" and self._yielded else outcome

    def _finish(self, outcome: Outcome) -> None:
        self._finished = True
        permit, self._permit = self._permit, None
        if permit is not None:
            self._client._settle(permit, outcome)

    async def _relay(self) -> AsyncGenerator[dict[str, Any], None]:
        client = self._client
        waited = 0.0
        while True:
            self.attempts += 1
            try:
                async with (
                    client._slots.slot(),
                    _sent(
                        client._http, client._request(self._url, self._body, stream=True)
                    ) as response,
                ):
                    if response.is_success:
                        async for chunk in iter_chunks(iter_lines(response.aiter_bytes())):
                            usage = usage_from(chunk.get("usage"))
                            if usage is not None:
                                self.usage = usage
                            if chunk.get("choices") == []:
                                continue
                            chunk["model"] = self._response_model
                            self._yielded = True
                            yield chunk
                        return
                    await response.aread()
                    failure = client._failure_of(response)
            except httpx.HTTPError as exc:
                failure = failures.from_transport_error(exc)
                if self._yielded:
                    failure.raise_error()
            assert self._permit is not None
            waited += await client._pause(
                failure, self.attempts, waited, self._started, self._permit
            )
