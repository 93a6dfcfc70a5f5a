"""Ledger store: CPU per record written to SQLite, as shipped vs the earlier writes, one run.

Each variant runs in its own process (sqlite3's adapters are process-wide),
fills a fresh WAL-mode ledger with ``--prefill`` rows, then writes
``--batches`` batches of 200 rows through ``SQLiteStore.write`` and reports
the process's user + system CPU per row (``os.times``: the store's thread,
SQLite's WAL writes and checkpoints included). Variants alternate over rounds:

* shipped      as the gateway writes today
* random uids  each row's unique key is 128 random bits (the earlier key):
               every row dirties its own page of the unique index
* no adapters  None and bool parameters take sqlite3's adapter-miss path
* route index  with the (route, started_at) index that schema version 4 dropped
* executemany  each row inserted and stepped on its own (sqlite3's executemany), not
               in multi-row INSERTs of up to 50 rows
* before       all four (the store before this benchmark existed)

This isolates the writer's share of the bookkeeping cost that
``ledger_overhead.py`` measures through the whole gateway.

Usage: python bench/ledger_store.py [--rounds 3] [--prefill 20000] [--batches 100]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cloud_overhead import _clean_env  # noqa: E402  (a sibling script, not a package)

VARIANTS = ("shipped", "random uids", "no adapters", "route index", "executemany", "before")
BATCH = 200


def child(variant: str, prefill: int, batches: int) -> dict[str, float]:
    from gateway.ledger import store as store_module
    from gateway.ledger.cost import price_costs
    from gateway.ledger.store import SQLiteStore, StoredRecord
    from gateway.settings import Settings
    from tests.gateway.ledger.rows import record as ledger_record

    if variant in ("no adapters", "before"):
        store_module.register_fast_adapters = lambda: None  # type: ignore[assignment]
    random_uids = variant in ("random uids", "before")
    route_index = variant in ("route index", "before")
    if variant in ("executemany", "before"):
        # a chunk longer than any batch: every row goes through executemany
        SQLiteStore._rows_per_insert = staticmethod(lambda connection: 1 << 30)  # type: ignore[method-assign,assignment]
    settings = Settings()

    def stored(index: int) -> StoredRecord:
        # A cloud-routed request, as the cloud-overhead benchmark sends them.
        record = ledger_record(
            request_id=f"bench-{index}",
            started_at=time.time(),
            model="gpt-4o-mini",
            route="cloud",
            reason="long-prompt",
            prompt_tokens=42,
            cloud_model="gpt-4o-mini",
            cloud_prompt_tokens=42,
            cloud_completion_tokens=17,
            cloud_seconds=0.0012,
            cloud_attempts=1,
            ttft_seconds=0.002,
            total_seconds=0.003,
        )
        row = StoredRecord(record, price_costs(record, settings.ledger, settings.cloud.model))
        if random_uids:
            object.__setattr__(row, "uid", os.urandom(16).hex())
        return row

    async def run() -> dict[str, float]:
        with tempfile.TemporaryDirectory() as scratch:
            path = Path(scratch) / "ledger.sqlite3"
            store = SQLiteStore(path)
            try:
                await store.migrate()
                if route_index:
                    with contextlib.closing(sqlite3.connect(path)) as connection:
                        connection.execute(
                            "CREATE INDEX records_route_started_at ON records (route, started_at)"
                        )
                for start in range(0, prefill, 1000):
                    await store.write([stored(i) for i in range(start, start + 1000)])
                pending = [
                    [stored(prefill + b * BATCH + i) for i in range(BATCH)] for b in range(batches)
                ]
                before = os.times()
                wall = time.perf_counter()
                for batch in pending:
                    await store.write(batch)
                wall = time.perf_counter() - wall
                after = os.times()
            finally:
                await store.aclose()
        rows = batches * BATCH
        return {
            "user_us": (after.user - before.user) / rows * 1e6,
            "system_us": (after.system - before.system) / rows * 1e6,
            "wall_us": wall / rows * 1e6,
        }

    return asyncio.run(run())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--prefill", type=int, default=20_000)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.prefill, args.batches)))
        return

    env = _clean_env()  # the default settings, whatever GATEWAY_* this shell has
    results: dict[str, list[dict[str, float]]] = {v: [] for v in VARIANTS}
    for round_ in range(args.rounds):
        order = VARIANTS[round_ % len(VARIANTS) :] + VARIANTS[: round_ % len(VARIANTS)]
        for variant in order:
            out = subprocess.run(
                [sys.executable, __file__, "--child", variant, "--prefill", str(args.prefill),
                 "--batches", str(args.batches)],
                env=env, capture_output=True, text=True, check=True,
            )  # fmt: skip
            results[variant].append(json.loads(out.stdout))

    rows = args.batches * BATCH
    print(
        f"SQLite ledger writes: {rows} rows per run in batches of {BATCH} after "
        f"{args.prefill} rows, {args.rounds} rounds, median [min-max] per row"
    )
    print(f"   {'':14s}{'CPU us':>22s}{'user us':>10s}{'system us':>11s}{'wall us':>10s}")
    shipped = statistics.median(r["user_us"] + r["system_us"] for r in results["shipped"])
    for variant in VARIANTS:
        cpu = [r["user_us"] + r["system_us"] for r in results[variant]]
        user = statistics.median(r["user_us"] for r in results[variant])
        system = statistics.median(r["system_us"] for r in results[variant])
        wall = statistics.median(r["wall_us"] for r in results[variant])
        print(
            f"   {variant:14s}{statistics.median(cpu):8.2f} [{min(cpu):5.2f}-{max(cpu):5.2f}]"
            f"{user:10.2f}{system:11.2f}{wall:10.2f}"
        )
    print("   CPU per row against shipped (os.times has 10 ms ticks: a few us of noise):")
    for variant in VARIANTS[1:]:
        cpu = statistics.median(r["user_us"] + r["system_us"] for r in results[variant])
        print(f"   {variant:14s}{cpu / shipped:6.2f}x  ({cpu - shipped:+.2f} us)")


if __name__ == "__main__":
    main()
