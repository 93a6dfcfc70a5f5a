"""Per-key limits: requests and tokens per minute, cloud spend per UTC day.

Counted per client key, in memory, from two sources:

- **requests** when they are admitted (a sliding 60 s window of start times);
- **tokens and cloud spend** from each finished request's ledger record
  (prompt + completion tokens, local and cloud, in the 60 s before now by the
  time the request finished; ``cloud_usd`` summed over the UTC day the
  request started in).

A request is admitted while the window has room, so one that arrives with a
single token of room left is admitted and may take the count past the limit:
tokens are only known when a request has finished.

At start-up the counters are rebuilt from the ledger store's records of the
current UTC day (and the last hour, for the minute windows), so a restart
does not reset anyone's limits. Requests this limiter refused do not count
as requests. Each replica counts what it serves (plus what was in the ledger
when it started): with several replicas, each enforces the limits on its own.
"""

from __future__ import annotations

import bisect
import logging
import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TypeVar

from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.auth.keys import Principal
from gateway.errors import GatewayError, RateLimitExceededError, error_response
from gateway.ledger.record import LedgerRecord
from gateway.ledger.store import LedgerStore, LedgerStoreError, StoredRecord
from gateway.settings import Settings

logger = logging.getLogger(__name__)

WINDOW_S = 60.0
DAY_S = 86_400.0
# Rebuilding the minute windows also needs requests that started a while ago and finished
# within the last minute: any that ran longer than this are not counted after a restart.
_LOOKBACK_S = 3_600.0
#: the error code of this limiter's own refusals (they do not count as requests)
REFUSED_CODE = "rate_limit_exceeded"
_LIMITED_PATHS = frozenset({"/v1/chat/completions", "/v1/completions"})
_T = TypeVar("_T", int, float)


@dataclass(frozen=True)
class KeyLimits:
    requests_per_minute: int | None = None
    tokens_per_minute: int | None = None
    daily_cloud_usd: float | None = None

    @property
    def any(self) -> bool:
        return (
            self.requests_per_minute is not None
            or self.tokens_per_minute is not None
            or self.daily_cloud_usd is not None
        )


def limits_per_key(settings: Settings) -> dict[str, KeyLimits]:
    """Each client key's limits (its own entry's, else the defaults); unlimited keys left out."""
    defaults = settings.key_limits
    limits: dict[str, KeyLimits] = {}
    for key in settings.auth.client_keys():
        own = KeyLimits(
            requests_per_minute=_either(key.requests_per_minute, defaults.requests_per_minute),
            tokens_per_minute=_either(key.tokens_per_minute, defaults.tokens_per_minute),
            daily_cloud_usd=_either(key.daily_cloud_usd, defaults.daily_cloud_usd),
        )
        if own.any:
            limits[key.id] = own
    return limits


def _either(own: _T | None, default: _T | None) -> _T | None:
    return own if own is not None else default


def _day(moment: float) -> int:
    """The UTC day number (Unix time has no leap seconds: days are exactly 86400 s)."""
    return math.floor(moment / DAY_S)


@dataclass
class _Counters:
    #: admission times within the window, oldest first
    admitted: deque[float] = field(default_factory=deque)
    #: (finish time, tokens) of finished requests, ordered by finish time
    finished: list[tuple[float, int]] = field(default_factory=list)
    tokens: int = 0
    #: the UTC day ``spent`` belongs to
    day: int = 0
    spent: float = 0.0

    def prune(self, now: float) -> None:
        cutoff = now - WINDOW_S
        while self.admitted and self.admitted[0] <= cutoff:
            self.admitted.popleft()
        gone = bisect.bisect_right(self.finished, cutoff, key=lambda entry: entry[0])
        if gone:
            self.tokens -= sum(tokens for _, tokens in self.finished[:gone])
            del self.finished[:gone]

    def add_tokens(self, finished_at: float, tokens: int) -> None:
        bisect.insort(self.finished, (finished_at, tokens), key=lambda entry: entry[0])
        self.tokens += tokens

    def add_spend(self, started_at: float, usd: float) -> None:
        day = _day(started_at)
        if day > self.day:
            self.day, self.spent = day, 0.0
        if day == self.day:
            self.spent += usd


def _tokens(record: LedgerRecord) -> int:
    return (
        record.local_prompt_tokens
        + record.local_completion_tokens
        + record.cloud_prompt_tokens
        + record.cloud_completion_tokens
    )


class KeyLimiter:
    def __init__(
        self, limits: Mapping[str, KeyLimits], *, clock: Callable[[], float] = time.time
    ) -> None:
        self._limits = dict(limits)
        self._clock = clock
        self._counters = {key_id: _Counters() for key_id in self._limits}

    def admit(self, key_id: str) -> None:
        """Count a new request, or raise RateLimitExceededError if a minute limit is reached."""
        limits = self._limits.get(key_id)
        if limits is None:
            return
        now = self._clock()
        counters = self._counters[key_id]
        counters.prune(now)
        rpm = limits.requests_per_minute
        if rpm is not None and len(counters.admitted) >= rpm:
            # The request that has to leave the window before one more fits.
            frees_at = counters.admitted[len(counters.admitted) - rpm] + WINDOW_S
            raise RateLimitExceededError(
                f"Rate limit reached for key '{key_id}': {rpm} requests per minute.",
                retry_after_seconds=frees_at - now,
            )
        tpm = limits.tokens_per_minute
        if tpm is not None and counters.tokens >= tpm:
            left = counters.tokens
            frees_at = now + WINDOW_S
            for finished_at, tokens in counters.finished:
                left -= tokens
                if left < tpm:
                    frees_at = finished_at + WINDOW_S
                    break
            raise RateLimitExceededError(
                f"Rate limit reached for key '{key_id}': {tpm} tokens per minute "
                f"({counters.tokens} used).",
                retry_after_seconds=frees_at - now,
            )
        if rpm is not None:
            counters.admitted.append(now)

    def budget_reset_in(self, key_id: str | None) -> float | None:
        """Seconds until the key's daily cloud budget resets if it is spent, else None."""
        if key_id is None:
            return None
        limits = self._limits.get(key_id)
        if limits is None or limits.daily_cloud_usd is None:
            return None
        now = self._clock()
        counters = self._counters[key_id]
        spent = counters.spent if counters.day == _day(now) else 0.0
        if spent < limits.daily_cloud_usd:
            return None
        return (_day(now) + 1) * DAY_S - now

    def observe(self, record: LedgerRecord, cloud_usd: float) -> None:
        """Count a finished request's tokens and cloud spend."""
        limits = self._limits.get(record.key_id) if record.key_id is not None else None
        if limits is None or record.key_id is None:
            return
        counters = self._counters[record.key_id]
        finished_at = record.started_at + record.total_seconds
        tokens = _tokens(record)
        if (
            limits.tokens_per_minute is not None
            and tokens
            and finished_at > self._clock() - WINDOW_S
        ):
            counters.add_tokens(finished_at, tokens)
        if limits.daily_cloud_usd is not None and cloud_usd:
            counters.add_spend(record.started_at, cloud_usd)

    def restore(self, rows: Iterable[StoredRecord]) -> int:
        """Rebuild the counters from ledger rows (oldest first); returns the rows counted."""
        now = self._clock()
        counted = 0
        for row in rows:
            record = row.record
            limits = self._limits.get(record.key_id) if record.key_id is not None else None
            if limits is None or record.key_id is None:
                continue
            counted += 1
            if (
                limits.requests_per_minute is not None
                and record.error != REFUSED_CODE
                and now - WINDOW_S < record.started_at <= now
            ):
                self._counters[record.key_id].admitted.append(record.started_at)
            self.observe(record, row.costs.cloud_usd)
        for counters in self._counters.values():
            counters.admitted = deque(sorted(counters.admitted))
        return counted

    async def restore_from(self, store: LedgerStore) -> None:
        """Rebuild from the store; a store that cannot be read leaves the counters at zero."""
        now = self._clock()
        since = min(_day(now) * DAY_S, now - WINDOW_S - _LOOKBACK_S)
        try:
            rows = await store.query(since=since)
        except LedgerStoreError as exc:
            logger.warning("per-key limits start from zero: the ledger cannot be read (%s)", exc)
            return
        counted = self.restore(rows)
        logger.info("per-key limits: counters rebuilt from %d ledger records", counted)

    def usage(self, key_id: str) -> tuple[int, int, float]:
        """(requests, tokens) in the minute window and cloud USD spent today, for one key."""
        counters = self._counters.get(key_id)
        if counters is None:
            return 0, 0, 0.0
        now = self._clock()
        counters.prune(now)
        spent = counters.spent if counters.day == _day(now) else 0.0
        return len(counters.admitted), counters.tokens, spent


class KeyLimitMiddleware:
    """Refuses a client key's completion request over its minute limits, before the body."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path") in _LIMITED_PATHS
        ):
            state = scope.get("state") or {}
            principal = state.get("principal")
            services = state.get("services")
            limiter = getattr(services, "limiter", None)
            if (
                isinstance(principal, Principal)
                and principal.key_id is not None
                and isinstance(limiter, KeyLimiter)
            ):
                try:
                    limiter.admit(principal.key_id)
                except GatewayError as error:
                    await error_response(error)(scope, receive, send)
                    return
        await self.app(scope, receive, send)


async def open_limiter(settings: Settings, store: LedgerStore | None) -> KeyLimiter | None:
    """The limiter for the configured keys, rebuilt from the ledger; None if no key has limits."""
    limits = limits_per_key(settings)
    if not limits:
        return None
    limiter = KeyLimiter(limits)
    if store is None:
        logger.warning("per-key limits start from zero: the ledger is disabled")
    else:
        await limiter.restore_from(store)
    return limiter
