"""Who may call what, decided on the ASGI path before the request body is read.

Access by ``scope["path"]`` (the path the router will match, never a URL
rebuilt from the Host header):

- ``/healthz``, ``/readyz``: public.
- ``/metrics``, ``/admin`` and below: the admin key.
- ``/v1/usage``: the admin key (every key's usage) or a client key (its own).
- everything else, ``/v1/*`` and paths that do not exist alike: a client key.

Matching is exact, so ``/metrics/`` or ``/healthz/`` fall to the default (a
client key) and nothing is public by accident. With ``GATEWAY_AUTH__DISABLED``
client paths are open; admin paths need the admin key whenever one is
configured, and are open only when none is.

The middleware sits inside the trace middleware: a refused completion request
still gets its request id and its ledger record (``key_id`` empty).
"""

from __future__ import annotations

import logging
from typing import Literal

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth.keys import ADMIN, OPEN, KeyRing, Principal
from gateway.errors import AuthenticationError, GatewayError, PermissionDeniedError, error_response
from gateway.settings import Settings
from gateway.trace import RequestTrace

logger = logging.getLogger(__name__)

Access = Literal["public", "client", "admin", "usage"]

_PUBLIC = frozenset({"/healthz", "/readyz"})
_ADMIN = frozenset({"/metrics", "/admin"})
_USAGE = "/v1/usage"
_MISSING = (
    "You didn't provide an API key. Send it in the Authorization header: "
    "'Authorization: Bearer YOUR_KEY'."
)
_INVALID = "Incorrect API key provided."


def access_of(path: str) -> Access:
    if path in _PUBLIC:
        return "public"
    if path in _ADMIN or path.startswith("/admin/"):
        return "admin"
    if path == _USAGE:
        return "usage"
    return "client"


def bearer_token(scope: Scope) -> bytes | None:
    """The token of the one ``Authorization: Bearer`` header; None if absent or malformed."""
    values = [value for name, value in scope.get("headers", ()) if name.lower() == b"authorization"]
    if len(values) != 1:
        return None
    scheme, _, token = values[0].strip().partition(b" ")
    token = token.strip()
    if scheme.lower() != b"bearer" or not token:
        return None
    return bytes(token)


def principal_of(state: object) -> Principal | None:
    """The principal the middleware admitted (request.state), None on public paths."""
    principal = getattr(state, "principal", None)
    return principal if isinstance(principal, Principal) else None


class AuthMiddleware:
    def __init__(self, app: ASGIApp, keys: KeyRing) -> None:
        self.app = app
        self.keys = keys

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        access = access_of(scope.get("path", ""))
        if access == "public":
            await self.app(scope, receive, send)
            return
        try:
            principal = self._authorize(access, scope)
        except GatewayError as error:
            if scope["type"] == "websocket":
                await send({"type": "websocket.close", "code": 1008})
            else:
                await error_response(error)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["principal"] = principal
        trace = state.get("trace")
        if isinstance(trace, RequestTrace):
            trace.key_id = principal.key_id
        await self.app(scope, receive, send)

    def _authorize(self, access: Access, scope: Scope) -> Principal:
        keys = self.keys
        token = bearer_token(scope)
        found = keys.identify(token) if token is not None else None
        if access == "client":
            if found is not None and found.kind == "client":
                return found
            if keys.disabled:
                return OPEN
            if found is ADMIN:
                raise PermissionDeniedError(
                    "The admin key is not a client key: use a client API key for /v1 requests."
                )
            raise AuthenticationError(_MISSING if token is None else _INVALID)
        if found is ADMIN:
            return ADMIN
        if not keys.has_admin and keys.disabled:
            return found if found is not None else OPEN
        if access == "usage" and found is not None:
            return found  # a client key: its own usage only
        if not keys.has_admin:
            raise PermissionDeniedError(
                "This endpoint needs the admin key, and none is configured: create one with "
                "`hybrid-gateway keys create --admin` and set GATEWAY_AUTH__ADMIN_KEY_HASH.",
                code="admin_key_not_configured",
            )
        if found is not None:
            raise PermissionDeniedError("This endpoint needs the admin key, not a client key.")
        raise AuthenticationError(_MISSING if token is None else _INVALID)


def warn_if_disabled(settings: Settings) -> None:
    """Said at every start: a gateway without authentication must not go unnoticed."""
    auth = settings.auth
    if not auth.disabled:
        return
    admin = (
        "admin routes still need the admin key"
        if auth.admin_key_hash
        else "/metrics, /v1/usage and /admin/* are open too"
    )
    logger.warning(
        "AUTHENTICATION IS DISABLED (GATEWAY_AUTH__DISABLED=true): anyone who can reach "
        "%s:%d can use the API without a key (%s). For local development only.",
        settings.server.host,
        settings.server.port,
        admin,
    )
