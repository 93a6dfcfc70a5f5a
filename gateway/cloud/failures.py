"""Everything that can go wrong with a cloud call, mapped onto the gateway's error tree.

This is the one place httpx exceptions and upstream HTTP statuses are
translated; each translation also says whether another attempt may help.
Messages never carry request headers, the key, or an upstream's 401/403 text
(OpenAI quotes part of a wrong key back).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import NoReturn

import httpx

from gateway.cloud.retry import parse_retry_after
from gateway.errors import (
    CloudUnavailableError,
    ContextLengthExceededError,
    GatewayError,
    InvalidRequestError,
    UpstreamError,
    UpstreamRateLimitedError,
    UpstreamTimeoutError,
)

# Statuses about the request's content: the client's to fix, passed on as 400.
_CLIENT_STATUSES = frozenset({400, 404, 413, 422})
# 408 is the server giving up on a slow request, as transient as a 503.
_RETRY_STATUSES = frozenset({408, 429})
_MAX_MESSAGE_CHARS = 1000


@dataclass(frozen=True)
class Failure:
    error: GatewayError
    #: for the retry log: "HTTP 503", "ConnectError", ...
    reason: str
    retryable: bool = False
    #: seconds the upstream asked us to wait (Retry-After)
    retry_after: float | None = None
    cause: BaseException | None = None

    def raise_error(self) -> NoReturn:
        raise self.error from self.cause


def from_transport_error(exc: httpx.HTTPError) -> Failure:
    """A failure to talk to the upstream at all (no status, or a broken response)."""
    reason = type(exc).__name__
    if isinstance(exc, httpx.PoolTimeout):
        # Our own connection pool is full: local saturation, not an upstream fault.
        error: GatewayError = CloudUnavailableError(
            "all connections to the cloud upstream are busy", retry_after_seconds=1
        )
        return Failure(error, reason, cause=exc)
    if isinstance(exc, httpx.ConnectTimeout):
        error = UpstreamTimeoutError("connecting to the cloud upstream timed out")
        return Failure(error, reason, retryable=True, cause=exc)
    if isinstance(exc, httpx.TimeoutException):
        # A read timeout means the upstream may be working on it: retrying would
        # pay twice and still be bounded by the same deadline.
        error = UpstreamTimeoutError("the cloud upstream stopped responding (read timeout)")
        return Failure(error, reason, cause=exc)
    if isinstance(exc, httpx.ConnectError):
        error = UpstreamError("could not connect to the cloud upstream")
        return Failure(error, reason, retryable=True, cause=exc)
    if isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError):
        # Includes a pooled keep-alive connection the server had already closed.
        error = UpstreamError("the connection to the cloud upstream failed")
        return Failure(error, reason, retryable=True, cause=exc)
    return Failure(UpstreamError("the cloud upstream call failed"), reason, cause=exc)


def from_response(
    status: int, headers: Mapping[str, str], content: bytes, *, now: float, secret: str | None
) -> Failure:
    """A non-2xx answer. ``now`` is wall-clock time, for a Retry-After date."""
    reason = f"HTTP {status}"
    retry_after = parse_retry_after(headers, now=now)
    if status == 429:
        error: GatewayError = UpstreamRateLimitedError(
            "the cloud upstream is rate limiting the gateway", retry_after_seconds=retry_after
        )
        return Failure(error, reason, retryable=True, retry_after=retry_after)
    if status >= 500 or status in _RETRY_STATUSES:
        error = UpstreamError(f"the cloud upstream failed with HTTP {status}")
        return Failure(error, reason, retryable=True, retry_after=retry_after)
    if status in (401, 403):
        error = UpstreamError(
            f"the cloud upstream refused the gateway's credentials (HTTP {status})"
        )
        return Failure(error, reason)
    if status in _CLIENT_STATUSES:
        return Failure(_client_error(status, content, secret), reason)
    return Failure(UpstreamError(f"the cloud upstream answered HTTP {status}"), reason)


def _client_error(status: int, content: bytes, secret: str | None) -> InvalidRequestError:
    message, param, code = _error_fields(content)
    if not message:
        message = f"the cloud upstream rejected the request (HTTP {status})"
    message = message[:_MAX_MESSAGE_CHARS]
    if secret:
        # Defence in depth: no known upstream echoes the key in a 4xx, but if one did,
        # this message goes to the client.
        message = message.replace(secret, "***")
    if code == "context_length_exceeded":
        return ContextLengthExceededError(message, param=param or "messages")
    return InvalidRequestError(message, param=param, code=code)


def _error_fields(content: bytes) -> tuple[str | None, str | None, str | None]:
    """(message, param, code) of an OpenAI error body; vLLM and FastAPI shapes too."""
    try:
        body = json.loads(content)
    except ValueError:
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    error = body.get("error")
    fields = error if isinstance(error, dict) else body
    message = fields.get("message", fields.get("detail"))
    param, code = fields.get("param"), fields.get("code")
    return (
        message if isinstance(message, str) else None,
        param if isinstance(param, str) else None,
        code if isinstance(code, str) else None,
    )


def deadline_exceeded(total_s: float, cause: TimeoutError) -> Failure:
    """The whole request outlived its deadline (httpx's read timeout is per chunk only)."""
    error = UpstreamTimeoutError(f"the cloud upstream did not finish within {total_s:g}s")
    return Failure(error, "deadline", cause=cause)
