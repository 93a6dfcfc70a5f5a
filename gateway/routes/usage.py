"""``GET /v1/usage``: the request ledger summed over a time window."""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Request

from gateway.auth.middleware import principal_of
from gateway.deps import ServicesDep
from gateway.errors import InvalidRequestError, ServiceUnavailableError
from gateway.ledger.store import LedgerStoreError
from gateway.ledger.summary import parse_bound
from gateway.ledger.writer import Ledger

logger = logging.getLogger(__name__)

router = APIRouter(tags=["usage"])


async def get_ledger(services: ServicesDep) -> Ledger | None:
    return services.ledger


LedgerDep = Annotated[Ledger | None, Depends(get_ledger)]


def _bound(text: str | None, now: float, param: str) -> float | None:
    try:
        return parse_bound(text, now)
    except ValueError as exc:
        raise InvalidRequestError(f"invalid value for '{param}': {exc}", param=param) from None


@router.get("/v1/usage")
async def usage(
    request: Request, ledger: LedgerDep, since: str = "24h", until: str | None = None
) -> dict[str, Any]:
    """Requests, routes, latencies, tokens and costs with ``since <= started_at < until``.

    With the admin key: every request. With a client key: that key's requests only.

    ``since``/``until``: a duration back from now (``90s``, ``30m``, ``24h``, ``7d``),
    an ISO-8601 timestamp (UTC unless it has an offset), or ``all``.
    """
    if ledger is None:
        # Disabled by configuration, not a passing condition: 404, as for an absent route.
        raise HTTPException(
            404, "the request ledger is disabled (GATEWAY_LEDGER__ENABLED=false): no usage data"
        )
    now = time.time()
    start = _bound(since, now, "since")
    end = _bound(until, now, "until")
    key_id = None  # every key's requests
    principal = principal_of(request.state)
    if principal is not None and principal.kind == "client":
        if principal.key_id is None:  # cannot happen: never fall back to every key's rows
            raise RuntimeError("a client principal without a key id")
        key_id = principal.key_id
    # Records queued a moment ago belong in the answer.
    await ledger.flush()
    try:
        # Summed in the database: the window's rows never come into this process.
        return await ledger.store.summarize(since=start, until=end, key_id=key_id)
    except LedgerStoreError as exc:
        logger.warning("usage: reading the ledger failed: %s", exc)
        raise ServiceUnavailableError(
            "the request ledger cannot be read right now",
            retry_after_seconds=5,
            code="ledger_unavailable",
        ) from exc
