"""Usage over a time window: what /v1/usage and ``report`` show, and how it is summed.

Definitions (the README's "Request ledger" section repeats them):

- ``by_route``: where answers came from; requests refused before routing count as ``none``.
- ``escalation_rate``: requests answered by the cloud after a local attempt
  (``local->cloud``) divided by requests whose local answer was judged by the
  confidence gate (those with a confidence value, plus escalations without
  one, e.g. a hard-floor stop); null when none was judged.
- ``latency``: per route, nearest-rank percentiles (the smallest value with at
  least p% of the values at or below it) of every request on that route,
  errors included; TTFT leaves out requests that sent no first byte.
- costs are sums of the per-request costs stored with each row.

The stores compute a summary in the database (``LedgerStore.summarize``): a
GROUP BY gives one :class:`Tally` per route, reason and status, the latency
percentiles come from the database's sort, and :func:`summary_of` turns them
into the JSON. :func:`summarize` does the same from rows in memory, one tally
per row: the reference the stores are tested against.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # store.py imports this module: the SQL stores build Tally objects
    from gateway.ledger.store import StoredRecord

ROUTES = ("local", "cloud", "local->cloud", "none")
PERCENTILES = (50, 95, 99)
ESTIMATES_NOTE = (
    "local cost, energy and CO2e are estimates from configured inputs (the machine's hourly "
    "cost, its power draw and the grid's carbon intensity, apportioned by local compute "
    "seconds); cloud cost is the cloud's reported token usage at configured list prices; the "
    "all-cloud counterfactual prices local answers' tokens, counted by the local tokenizer, at "
    "the cloud price"
)

#: latency at each of PERCENTILES, by name ("p50", ...); None where there were no values
Percentiles = dict[str, float | None]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")


def parse_since(text: str, now: float) -> float:
    """A Unix time from ``"90s"``, ``"30m"``, ``"24h"``, ``"7d"``, ``"2w"`` (that long
    before ``now``) or an ISO-8601 timestamp (without a UTC offset it is taken as UTC)."""
    value = text.strip()
    match = _DURATION.fullmatch(value.lower())
    if match is not None:
        return now - float(match.group(1)) * _UNITS[match.group(2)]
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"expected a duration such as 90s, 30m, 24h or 7d, or an ISO-8601 timestamp such "
            f"as 2026-01-31T12:00:00Z; got {text!r}"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def parse_bound(text: str | None, now: float) -> float | None:
    """Like :func:`parse_since`, but ``None``, ``""`` or ``"all"`` mean no bound."""
    if text is None or text.strip().lower() in ("", "all"):
        return None
    return parse_since(text, now)


def nearest_rank(p: float, count: int) -> int:
    """Which value (1 = the smallest) of ``count`` is the nearest-rank ``p``th percentile."""
    return max(1, math.ceil(p / 100 * count))


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of ``values`` (sorted or not); None when empty."""
    if not values:
        return None
    return sorted(values)[nearest_rank(p, len(values)) - 1]


def percentiles_of(found: Sequence[float | None] | None) -> Percentiles:
    """Values found at PERCENTILES, in that order (None: there were no values) by name."""
    values = found if found is not None else [None] * len(PERCENTILES)
    return {f"p{p}": value for p, value in zip(PERCENTILES, values, strict=True)}


def route_name(row: StoredRecord) -> str:
    return row.record.route or "none"


@dataclass(frozen=True)
class Tally:
    """Counts and sums over the rows of a window that share a route, a reason and a status.

    A store's summary query gives one per group (store.py's TALLY says each field
    in SQL); :meth:`of` is one row's own. ``energy_wh`` and ``gco2e`` are None
    where no row has an energy estimate, as SQL's SUM over no values.
    """

    route: str
    reason: str
    status: int
    requests: int
    with_ttft: int
    judged: int
    escalated: int
    degraded: int
    local_prompt_tokens: int
    local_completion_tokens: int
    cloud_prompt_tokens: int
    cloud_completion_tokens: int
    cloud_usd: float
    local_usd: float
    counterfactual_usd: float
    savings_usd: float
    energy_requests: int
    energy_wh: float | None
    gco2e: float | None

    @classmethod
    def of(cls, row: StoredRecord) -> Tally:
        r, c = row.record, row.costs
        estimated = c.local_energy_wh is not None
        return cls(
            route=route_name(row),
            reason=r.reason or "none",
            status=r.status,
            requests=1,
            with_ttft=int(r.ttft_seconds is not None),
            judged=int(r.confidence is not None or r.route == "local->cloud"),
            escalated=int(r.route == "local->cloud"),
            degraded=int(r.degraded is not None),
            local_prompt_tokens=r.local_prompt_tokens,
            local_completion_tokens=r.local_completion_tokens,
            cloud_prompt_tokens=r.cloud_prompt_tokens,
            cloud_completion_tokens=r.cloud_completion_tokens,
            cloud_usd=c.cloud_usd,
            local_usd=c.local_usd,
            counterfactual_usd=c.counterfactual_usd,
            savings_usd=c.savings_usd,
            energy_requests=int(estimated),
            energy_wh=c.local_energy_wh,
            gco2e=(c.local_gco2e or 0.0) if estimated else None,
        )


@dataclass(frozen=True)
class RouteLatency:
    ttft_seconds: Percentiles
    total_seconds: Percentiles


def _counts(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items()))


def summary_of(
    tallies: Iterable[Tally],
    latency: Mapping[str, RouteLatency],
    *,
    since: float | None,
    until: float | None,
) -> dict[str, Any]:
    """The JSON-ready summary of a window from its tallies and each route's latency
    (``latency`` needs an entry for every route in ROUTES that has requests)."""
    tallies = list(tallies)
    by_route = dict.fromkeys(ROUTES, 0)
    by_reason: Counter[str] = Counter()
    by_status: Counter[str] = Counter()
    for tally in tallies:
        by_route[tally.route] = by_route.get(tally.route, 0) + tally.requests
        by_reason[tally.reason] += tally.requests
        by_status[str(tally.status)] += tally.requests
    escalated = sum(t.escalated for t in tallies)
    judged = sum(t.judged for t in tallies)
    cloud = sum(t.cloud_usd for t in tallies)
    local = sum(t.local_usd for t in tallies)
    energy_requests = sum(t.energy_requests for t in tallies)
    return {
        "since": since,
        "until": until,
        "requests": sum(t.requests for t in tallies),
        "by_route": by_route,
        "by_reason": _counts(by_reason),
        "by_status": _counts(by_status),
        "escalation_rate": escalated / judged if judged else None,
        "judged_locally": judged,
        "escalated": escalated,
        "degraded": sum(t.degraded for t in tallies),
        "latency": {
            route: {
                "count": by_route[route],
                "ttft_seconds": latency[route].ttft_seconds,
                "total_seconds": latency[route].total_seconds,
            }
            for route in ROUTES
            if by_route[route]
        },
        "tokens": {
            "local_prompt": sum(t.local_prompt_tokens for t in tallies),
            "local_completion": sum(t.local_completion_tokens for t in tallies),
            "cloud_prompt": sum(t.cloud_prompt_tokens for t in tallies),
            "cloud_completion": sum(t.cloud_completion_tokens for t in tallies),
        },
        "cost_usd": {
            "cloud": cloud,
            "local_estimate": local,
            "total": cloud + local,
            "all_cloud_counterfactual": sum(t.counterfactual_usd for t in tallies),
            "savings": sum(t.savings_usd for t in tallies),
        },
        "energy": (
            {
                "wh": sum(t.energy_wh for t in tallies if t.energy_wh is not None),
                "gco2e": sum(t.gco2e for t in tallies if t.gco2e is not None),
                "requests": energy_requests,
            }
            if energy_requests
            else None
        ),
        "estimates_note": ESTIMATES_NOTE,
    }


def summarize(
    rows: Sequence[StoredRecord], *, since: float | None, until: float | None
) -> dict[str, Any]:
    """The summary of ``rows`` (which the caller already limited to the window), in memory."""
    latency: dict[str, RouteLatency] = {}
    for route in ROUTES:
        on_route = [row.record for row in rows if route_name(row) == route]
        if on_route:
            ttft = [r.ttft_seconds for r in on_route if r.ttft_seconds is not None]
            total = [r.total_seconds for r in on_route]
            latency[route] = RouteLatency(
                percentiles_of([percentile(ttft, p) for p in PERCENTILES]),
                percentiles_of([percentile(total, p) for p in PERCENTILES]),
            )
    return summary_of(map(Tally.of, rows), latency, since=since, until=until)
