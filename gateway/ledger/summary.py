"""Usage over a time window, from ledger rows: what /v1/usage and ``report`` show.

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
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

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


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank percentile of ``values`` (sorted or not); None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def _percentiles(values: Sequence[float]) -> dict[str, float | None]:
    return {f"p{p}": percentile(values, p) for p in PERCENTILES}


def route_name(row: StoredRecord) -> str:
    return row.record.route or "none"


def _counts(keys: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(keys).items()))


def summarize(
    rows: Sequence[StoredRecord], *, since: float | None, until: float | None
) -> dict[str, Any]:
    """A JSON-ready summary of ``rows`` (which the caller already limited to the window)."""
    records = [row.record for row in rows]
    by_route = dict.fromkeys(ROUTES, 0)
    by_route.update(Counter(route_name(row) for row in rows))
    escalated = sum(1 for r in records if r.route == "local->cloud")
    judged = sum(1 for r in records if r.confidence is not None or r.route == "local->cloud")
    latency: dict[str, Any] = {}
    for route in ROUTES:
        on_route = [r for r in records if (r.route or "none") == route]
        if on_route:
            latency[route] = {
                "count": len(on_route),
                "ttft_seconds": _percentiles(
                    [r.ttft_seconds for r in on_route if r.ttft_seconds is not None]
                ),
                "total_seconds": _percentiles([r.total_seconds for r in on_route]),
            }
    cloud = sum(row.costs.cloud_usd for row in rows)
    local = sum(row.costs.local_usd for row in rows)
    energy_rows = [row.costs for row in rows if row.costs.local_energy_wh is not None]
    return {
        "since": since,
        "until": until,
        "requests": len(rows),
        "by_route": by_route,
        "by_reason": _counts(r.reason or "none" for r in records),
        "by_status": _counts(str(r.status) for r in records),
        "escalation_rate": escalated / judged if judged else None,
        "judged_locally": judged,
        "escalated": escalated,
        "degraded": sum(1 for r in records if r.degraded is not None),
        "latency": latency,
        "tokens": {
            "local_prompt": sum(r.local_prompt_tokens for r in records),
            "local_completion": sum(r.local_completion_tokens for r in records),
            "cloud_prompt": sum(r.cloud_prompt_tokens for r in records),
            "cloud_completion": sum(r.cloud_completion_tokens for r in records),
        },
        "cost_usd": {
            "cloud": cloud,
            "local_estimate": local,
            "total": cloud + local,
            "all_cloud_counterfactual": sum(row.costs.counterfactual_usd for row in rows),
            "savings": sum(row.costs.savings_usd for row in rows),
        },
        "energy": (
            {
                "wh": sum(c.local_energy_wh or 0.0 for c in energy_rows),
                "gco2e": sum(c.local_gco2e or 0.0 for c in energy_rows),
                "requests": len(energy_rows),
            }
            if energy_rows
            else None
        ),
        "estimates_note": ESTIMATES_NOTE,
    }
