"""``hybrid-gateway report``: the ledger as tables, JSON, CSV, JSON lines or a plot.

The tables show the same summary as ``GET /v1/usage`` (``--json`` prints the
same JSON object as that endpoint), computed in the database; ``--csv`` and
``--jsonl`` export every row, record fields then cost fields, a page at a time.
The plot draws every row, so ``--plot`` reads the whole window into memory.
"""

from __future__ import annotations

import asyncio
import csv
import json
import textwrap
from collections.abc import AsyncIterable, Awaitable, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, TextIO, TypeVar

from gateway.ledger.store import COLUMN_NAMES, LedgerStore, LedgerStoreError, StoredRecord
from gateway.ledger.stores import describe_store, open_store
from gateway.ledger.summary import ROUTES
from gateway.settings import LedgerSettings

T = TypeVar("T")

Output = Literal["table", "json", "csv", "jsonl"]


def with_store(ledger: LedgerSettings, work: Callable[[LedgerStore], Awaitable[T]]) -> T:
    """``work`` on the configured ledger's store, closed after; LedgerStoreError if it
    cannot be read."""

    async def run() -> T:
        store = open_store(ledger)
        try:
            return await work(store)
        finally:
            await store.aclose()

    return asyncio.run(run())


def iso(moment: float | None, missing: str) -> str:
    if moment is None:
        return missing
    return datetime.fromtimestamp(moment, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        first = cells[0].ljust(widths[0])
        rest = (c.rjust(w) for c, w in zip(cells[1:], widths[1:], strict=True))
        return "  ".join((first, *rest)).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *map(line, rows)])


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _usd(value: float) -> str:
    return f"{value:.6f}"


def format_summary(summary: dict[str, Any], location: str) -> str:
    """The summary as plain-text tables; ``location`` says which ledger it is."""
    total = summary["requests"]
    window = (
        f"{iso(summary['since'], 'the beginning')} to {iso(summary['until'], 'now')} "
        "(start inclusive, end exclusive)"
    )
    head = [f"ledger: {location}", f"window: {window}"]
    if total == 0:
        return "\n".join([*head, "no records in this window", ""])
    rate = summary["escalation_rate"]
    escalation = (
        "no request was judged locally"
        if rate is None
        else f"{rate:.1%} ({summary['escalated']} of {summary['judged_locally']} judged locally)"
    )
    head.append(
        f"requests: {total}   degraded: {summary['degraded']}   escalation rate: {escalation}"
    )
    route_rows = []
    for route in ROUTES:
        count = summary["by_route"][route]
        if not count:
            continue
        latency = summary["latency"].get(route, {})
        ttft = latency.get("ttft_seconds", {})
        totals = latency.get("total_seconds", {})
        route_rows.append(
            [route, str(count), f"{count / total:.1%}"]
            + [_seconds(ttft.get(p)) for p in ("p50", "p95", "p99")]
            + [_seconds(totals.get(p)) for p in ("p50", "p95", "p99")]
        )
    routes = _table(
        ["route", "requests", "share", "ttft p50", "p95", "p99", "total p50", "p95", "p99"],
        route_rows,
    )
    reasons = _table(["reason", "requests"], [[k, str(v)] for k, v in summary["by_reason"].items()])
    statuses = _table(
        ["status", "requests"], [[k, str(v)] for k, v in summary["by_status"].items()]
    )
    tokens = summary["tokens"]
    token_table = _table(
        ["tokens", "local", "cloud"],
        [
            ["prompt", str(tokens["local_prompt"]), str(tokens["cloud_prompt"])],
            ["completion", str(tokens["local_completion"]), str(tokens["cloud_completion"])],
        ],
    )
    cost = summary["cost_usd"]
    cost_table = _table(
        ["cost", "USD"],
        [
            ["cloud (reported usage x list price)", _usd(cost["cloud"])],
            ["local (estimate)", _usd(cost["local_estimate"])],
            ["total", _usd(cost["total"])],
            ["all-cloud counterfactual", _usd(cost["all_cloud_counterfactual"])],
            ["savings", _usd(cost["savings"])],
        ],
    )
    energy = summary["energy"]
    energy_line = (
        "energy: not estimated (set GATEWAY_LEDGER__POWER_WATTS)"
        if energy is None
        else f"energy (estimate): {energy['wh']:.4f} Wh, {energy['gco2e']:.4f} gCO2e "
        f"({energy['requests']} requests)"
    )
    note = textwrap.fill(f"note: {summary['estimates_note']}", width=100)
    sections = [
        "\n".join(head),
        routes + "\n(latency in seconds, nearest-rank percentiles)",
        reasons,
        statuses,
        token_table,
        cost_table,
        energy_line,
        note,
    ]
    return "\n\n".join(sections) + "\n"


def _csv_value(value: Any) -> Any:
    # None as an empty cell, like a spreadsheet's blank.
    return "" if value is None else value


async def write_csv(rows: AsyncIterable[StoredRecord], out: TextIO) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMN_NAMES)
    async for row in rows:
        values = row.as_row()
        writer.writerow([_csv_value(values[name]) for name in COLUMN_NAMES])


async def write_jsonl(rows: AsyncIterable[StoredRecord], out: TextIO) -> None:
    async for row in rows:
        out.write(json.dumps(row.as_row()) + "\n")


def report(
    *,
    ledger: LedgerSettings,
    since: float | None,
    until: float | None,
    output: Output,
    plot: Path | None,
    out: TextIO,
    err: TextIO,
) -> int:
    """Run the report; the exit status (1: the ledger cannot be read)."""
    if ledger.url is None and not ledger.path.is_file():
        # Opening would create an empty ledger: a mistyped path must not look like no traffic.
        err.write(f"no ledger database at {ledger.path} (see --db / GATEWAY_LEDGER__PATH)\n")
        return 1
    try:
        if output in ("csv", "jsonl"):
            export = write_csv if output == "csv" else write_jsonl
            with_store(ledger, lambda store: export(store.scan(since=since, until=until), out))
        else:
            summary = with_store(ledger, lambda store: store.summarize(since=since, until=until))
            if output == "json":
                out.write(json.dumps(summary) + "\n")
            else:
                out.write(format_summary(summary, describe_store(ledger)))
        if plot is not None:
            from gateway.ledger.plot import plot_rows

            # The plot draws every row: the one output that holds the window in memory.
            rows = with_store(ledger, lambda store: store.query(since=since, until=until))
            plot_rows(rows, plot, since=since, until=until)
            err.write(f"wrote {plot} ({len(rows)} records)\n")
    except LedgerStoreError as exc:
        # An export may have written part of the window by then.
        err.write(f"cannot read the ledger: {exc}\n")
        return 1
    return 0
