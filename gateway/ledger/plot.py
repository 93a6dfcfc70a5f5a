"""``report --plot``: latency by route, spend against the all-cloud counterfactual, route share.

matplotlib is imported inside the function (it is slow to import and only
this command needs it) and used through ``Figure`` with the Agg canvas, never
pyplot: no global figure registry, no GUI backend, nothing left open.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from datetime import timedelta
from itertools import accumulate
from pathlib import Path
from typing import Any

import numpy as np

from gateway.ledger.report import iso
from gateway.ledger.store import StoredRecord
from gateway.ledger.summary import ROUTES, route_name

# Bucket widths for the route-share panel, in seconds: the first giving at most ~30 buckets.
_BUCKETS_S = (60, 300, 900, 3600, 3 * 3600, 6 * 3600, 86400, 7 * 86400)
_MAX_BUCKETS = 30
_COLOURS = {"local": "#2a9d8f", "cloud": "#e76f51", "local->cloud": "#e9c46a", "none": "#8d99ae"}


def bucket_seconds(span_s: float) -> int:
    for width in _BUCKETS_S:
        if span_s / width <= _MAX_BUCKETS:
            return width
    return _BUCKETS_S[-1]


def _datetimes(moments: Sequence[float]) -> np.ndarray[Any, np.dtype[np.datetime64]]:
    # numpy datetimes (UTC, like the timestamps): matplotlib plots them as dates.
    return np.array([int(m * 1000) for m in moments], dtype="datetime64[ms]")


def plot_rows(
    rows: Sequence[StoredRecord], path: Path, *, since: float | None, until: float | None
) -> None:
    """Write a PNG of ``rows`` to ``path`` (a note instead of panels when there are none)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    title = f"hybrid-gateway ledger, {iso(since, 'the beginning')} to {iso(until, 'now')}"
    if not rows:
        figure = Figure(figsize=(8, 3))
        FigureCanvasAgg(figure)
        figure.suptitle(title)
        figure.text(0.5, 0.5, "no records in this window", ha="center", va="center", fontsize=14)
        figure.savefig(path, format="png")
        return

    figure = Figure(figsize=(12, 13), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    grid = figure.add_gridspec(3, 2)
    ordered = sorted(rows, key=lambda row: row.record.started_at)
    routes = [route for route in ROUTES if any(route_name(row) == route for row in ordered)]

    # (1) latency distributions by route
    for column, (label, attribute) in enumerate(
        (("time to first byte (s)", "ttft_seconds"), ("total time (s)", "total_seconds"))
    ):
        axes = figure.add_subplot(grid[0, column])
        data: list[list[float]] = []
        labels: list[str] = []
        for route in routes:
            values = [
                value
                for row in ordered
                if route_name(row) == route
                and (value := getattr(row.record, attribute)) is not None
            ]
            if values:
                data.append(values)
                labels.append(f"{route}\n(n={len(values)})")
        axes.set_title(f"{label} by route")
        if data:
            axes.boxplot(data, tick_labels=labels, showfliers=True)
            axes.set_ylabel("seconds")
        else:
            axes.text(0.5, 0.5, "no data", ha="center", va="center", transform=axes.transAxes)

    # (2) cumulative spend against the cumulative all-cloud counterfactual
    axes = figure.add_subplot(grid[1, :])
    times = _datetimes([row.record.started_at for row in ordered])
    spent = list(accumulate(row.costs.cloud_usd + row.costs.local_usd for row in ordered))
    cloud = list(accumulate(row.costs.cloud_usd for row in ordered))
    counterfactual = list(accumulate(row.costs.counterfactual_usd for row in ordered))
    axes.step(times, counterfactual, where="post", label="all-cloud counterfactual")
    axes.step(times, spent, where="post", label="actual: cloud + local estimate")
    axes.step(times, cloud, where="post", linestyle="--", label="actual: cloud only")
    axes.set_title("cumulative spend (USD)")
    axes.set_ylabel("USD")
    axes.legend(loc="upper left")

    # (3) route share per time bucket, stacked
    axes = figure.add_subplot(grid[2, :])
    first = ordered[0].record.started_at
    width = bucket_seconds(ordered[-1].record.started_at - first)
    origin = math.floor(first / width) * width
    counts: dict[int, Counter[str]] = {}
    for row in ordered:
        index = int((row.record.started_at - origin) // width)
        counts.setdefault(index, Counter())[route_name(row)] += 1
    buckets = sorted(counts)
    centres = _datetimes([origin + (index + 0.5) * width for index in buckets])
    bottoms = [0.0] * len(buckets)
    for route in routes:
        shares = [counts[i][route] / sum(counts[i].values()) for i in buckets]
        axes.bar(
            centres,
            shares,
            width=np.timedelta64(int(width * 0.9), "s"),
            bottom=bottoms,
            label=route,
            color=_COLOURS[route],
        )
        bottoms = [b + s for b, s in zip(bottoms, shares, strict=True)]
    axes.set_ylim(0, 1)
    axes.set_title(f"route share per {timedelta(seconds=width)} bucket")
    axes.set_ylabel("share of requests")
    # Outside the axes: inside, it would hide the bars it explains.
    axes.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    figure.savefig(path, format="png")
