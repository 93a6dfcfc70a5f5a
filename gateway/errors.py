"""The gateway's one exception tree, and its translation into OpenAI error bodies.

Tree::

    GatewayError                         500 server_error
    ├── InvalidRequestError              400 invalid_request_error (param names the field)
    │   ├── ContextLengthExceededError   400 code=context_length_exceeded
    │   └── RequestTooLargeError         413 code=request_too_large (body over the limit)
    ├── ModelNotFoundError               404 code=model_not_found
    ├── AuthenticationError              401 code=invalid_api_key, WWW-Authenticate: Bearer
    ├── PermissionDeniedError            403 code=permission_denied (or admin_key_not_configured)
    ├── RateLimitExceededError           429 rate_limit_error code=rate_limit_exceeded (a key's
    │   │                                    requests or tokens per minute), Retry-After
    │   └── BudgetExhaustedError         429 insufficient_quota (the key's daily cloud budget
    │                                        is spent): Retry-After = seconds to UTC midnight
    ├── UpstreamError                    502 code=upstream_error (cloud unreachable, 5xx after
    │                                        retries, malformed reply, stream cut, 401/403)
    ├── UpstreamTimeoutError             504 code=upstream_timeout (connect/read/total deadline)
    ├── UpstreamRateLimitedError         429 rate_limit_error code=upstream_rate_limited,
    │                                        Retry-After from the upstream when it sent one
    └── ServiceUnavailableError          503 server_error, with Retry-After
        ├── QueueFullError               503 code=queue_full
        └── CloudUnavailableError        503 code=cloud_unavailable (no cloud configured, or
                                             the circuit is open: Retry-After = cool-down left)

An upstream 400/404/413/422 about the request's content becomes an
``InvalidRequestError`` carrying the upstream's message, param and code.

Library errors are mapped onto this tree in one place per library
(:func:`translate_engine_errors` for the local engine, ``gateway.cloud.failures``
for httpx and upstream statuses); one handler renders any ``GatewayError`` as
``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import local_model
from gateway.jsonio import JSONBody

logger = logging.getLogger(__name__)


class GatewayError(Exception):
    status_code = 500
    error_type = "server_error"
    default_code: str | None = None

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequestError(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"


class RequestTooLargeError(InvalidRequestError):
    status_code = 413
    default_code = "request_too_large"


class ModelNotFoundError(GatewayError):
    status_code = 404
    error_type = "invalid_request_error"
    default_code = "model_not_found"


class AuthenticationError(GatewayError):
    """No API key, or one that matches no configured key (never quoted back)."""

    status_code = 401
    error_type = "invalid_request_error"
    default_code = "invalid_api_key"

    def __init__(self, message: str) -> None:
        super().__init__(message, headers={"WWW-Authenticate": "Bearer"})


class PermissionDeniedError(GatewayError):
    status_code = 403
    error_type = "invalid_request_error"
    default_code = "permission_denied"


class RateLimitExceededError(GatewayError):
    """One of the client key's own limits; OpenAI's code, so SDKs back off and retry."""

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        seconds = max(1, math.ceil(retry_after_seconds))
        super().__init__(message, headers={"Retry-After": str(seconds)})


class BudgetExhaustedError(RateLimitExceededError):
    # OpenAI's type and code for a spent quota.
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class ServiceUnavailableError(GatewayError):
    status_code = 503

    def __init__(self, message: str, *, retry_after_seconds: float, code: str | None = None):
        seconds = max(1, math.ceil(retry_after_seconds))
        super().__init__(message, code=code, headers={"Retry-After": str(seconds)})


class QueueFullError(ServiceUnavailableError):
    default_code = "queue_full"


class CloudUnavailableError(ServiceUnavailableError):
    default_code = "cloud_unavailable"

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        if retry_after_seconds is None:
            # No cloud configured: waiting will not help, so no Retry-After.
            GatewayError.__init__(self, message)
        else:
            super().__init__(message, retry_after_seconds=retry_after_seconds)


class UpstreamError(GatewayError):
    status_code = 502
    default_code = "upstream_error"


class UpstreamTimeoutError(GatewayError):
    status_code = 504
    default_code = "upstream_timeout"


class UpstreamRateLimitedError(GatewayError):
    """The cloud kept answering 429: retries ran out, or its Retry-After exceeds the budget.

    The type is ``rate_limit_error``: OpenAI's own 429 bodies name the exhausted
    quota (``requests``/``tokens``), which the gateway cannot know for every
    upstream; OpenAI clients key on the status code.
    """

    status_code = 429
    error_type = "rate_limit_error"
    default_code = "upstream_rate_limited"

    def __init__(self, message: str, *, retry_after_seconds: float | None = None) -> None:
        headers = None
        if retry_after_seconds is not None:
            headers = {"Retry-After": str(max(1, math.ceil(retry_after_seconds)))}
        super().__init__(message, headers=headers)


def from_engine_error(exc: Exception) -> GatewayError:
    """The gateway error for an exception raised by the local engine."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, local_model.QueueFullError):
        return QueueFullError(str(exc), retry_after_seconds=exc.retry_after_seconds)
    if isinstance(exc, local_model.EngineClosedError):
        return ServiceUnavailableError(str(exc), retry_after_seconds=5, code="shutting_down")
    if isinstance(exc, local_model.PromptTooLongError):
        return ContextLengthExceededError(str(exc), param="messages")
    if isinstance(exc, local_model.GenerationFailedError):
        # The cause stays in the server log; the client gets no internals.
        return GatewayError("the local model failed to generate", code="local_model_error")
    return GatewayError("internal error")


@contextmanager
def translate_engine_errors() -> Iterator[None]:
    """Map local-engine exceptions onto the gateway tree."""
    try:
        yield
    except local_model.LocalModelError as exc:
        raise from_engine_error(exc) from exc


def error_response(error: GatewayError) -> JSONResponse:
    return JSONBody(error.body(), status_code=error.status_code, headers=error.headers)


def _param_from_location(location: Sequence[int | str]) -> str | None:
    parts = [str(p) for p in location if p != "body"]
    if not parts:
        return None
    name = parts[0]
    for part in parts[1:]:
        name += f"[{part}]" if part.isdigit() else f".{part}"
    return name


def _validation_message(error: dict[str, Any], param: str | None) -> str:
    kind = error.get("type")
    if kind == "json_invalid":
        return "the request body is not valid JSON"
    if kind == "missing":
        return f"missing required parameter: '{param}'"
    if kind == "extra_forbidden":
        return f"unrecognized request argument: '{param}'"
    message = str(error.get("msg", "invalid value"))
    return f"invalid value for '{param}': {message}" if param else message


def install_error_handlers(app: FastAPI) -> None:
    async def on_gateway_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, GatewayError)
        if exc.status_code >= 500:
            logger.warning("request failed: %s (%s)", exc.message, exc.code)
        return error_response(exc)

    async def on_validation_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        errors = list(exc.errors())
        first: dict[str, Any] = errors[0] if errors else {}
        param = _param_from_location(first.get("loc", ()))
        if first.get("type") == "json_invalid":
            param = None
        error = InvalidRequestError(_validation_message(first, param), param=param)
        return error_response(error)

    async def on_http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        error_type = "invalid_request_error" if exc.status_code < 500 else "server_error"
        body = {
            "error": {"message": str(exc.detail), "type": error_type, "param": None, "code": None}
        }
        return JSONResponse(body, status_code=exc.status_code, headers=exc.headers)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.error("unhandled error", exc_info=exc)
        return error_response(GatewayError("internal error"))

    app.add_exception_handler(GatewayError, on_gateway_error)
    app.add_exception_handler(RequestValidationError, on_validation_error)
    app.add_exception_handler(StarletteHTTPException, on_http_error)
    app.add_exception_handler(Exception, on_unexpected)
