"""Ledger and metrics cost: the gateway with its bookkeeping on vs off, in one run.

Two gateway processes in front of the same fast mock upstream (the cloud
route: nothing else is slow there, so bookkeeping shows the most):

* on   as shipped: ledger (SQLite, batched writer), Prometheus metrics, JSON access log
* off  GATEWAY_LEDGER__ENABLED=false, GATEWAY_SERVER__METRICS=false,
       GATEWAY_SERVER__ACCESS_LOG=false (with --keep-access-log the access log
       stays on in both: the ledger and the metrics alone, as the issue names them)

Each round starts a fresh pair of gateways (two processes of the same code
differ by up to 13% in CPU per request, more than the effect) and blocks of
requests alternate between them (order rotated) at each concurrency; the
report gives throughput on/off with the per-round range and the added
p50/p99, then each gateway's CPU time per request (Linux /proc), pooled over
the rounds: on this shared 2-core box throughput moves +-5% between blocks.
The throughput that CPU implies is printed too: where the load generator,
the mock and the gateway keep both cores busy, requests per second scale
with 1 / (their CPU per request), so what bookkeeping adds to the gateway's
CPU, over the CPU of all three, is its throughput cost, an estimate much
steadier than the ratio of wall-clock throughputs (rounds spread +-20%).
Target: bookkeeping costs <= 3% of throughput (LiteLLM's own bar for a
logging callback is 10%).

Usage: python bench/ledger_overhead.py [--rounds 4] [--concurrency 1 16] [--keep-access-log]
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cloud_overhead import (  # noqa: E402  (a sibling script, not a package)
    BODY,
    POLICY,
    Series,
    Server,
    _clients,
    _loadavg,
    check_policy,
    percentile,
    run,
    run_block,
    sender,
    start_gateway,
    start_mock,
)

OFF = {
    "GATEWAY_LEDGER__ENABLED": "false",
    "GATEWAY_SERVER__METRICS": "false",
    "GATEWAY_SERVER__ACCESS_LOG": "false",
}
PLAN = {1: 400, 16: 2000}
VARIANTS = ("on", "off")


async def measure(
    start: Callable[[str, int], Server], plan: dict[int, int], rounds: int, mock: Server
) -> dict[int, dict[str, Series]]:
    """Each round starts a fresh pair of gateways and runs a block on each at every
    concurrency. Two gateway processes of the same code differ by up to 13% in CPU
    per request (seen here: hash seeds, memory layout, where the scheduler puts
    them), more than bookkeeping costs; new processes every round average that out
    instead of crediting one variant with its process's luck."""
    results = {c: {name: Series() for name in VARIANTS} for c in plan}
    send = sender("/v1/chat/completions", BODY, stream=False, gateway=True)
    for round_ in range(rounds):
        gateways = {name: start(name, round_) for name in VARIANTS}
        try:
            for index, (concurrency, total) in enumerate(plan.items()):
                clients = {
                    name: _clients(g.url, concurrency, shared=False) for name, g in gateways.items()
                }
                try:
                    for name in gateways:  # warm-up
                        await run_block(clients[name], send, max(50, 4 * concurrency), {})
                    order = list(VARIANTS)
                    if (round_ + index) % 2:
                        order.reverse()
                    for name in order:
                        processes = {name: gateways[name], "mock": mock}
                        block = await run_block(clients[name], send, total, processes)
                        results[concurrency][name].blocks.append(block)
                finally:
                    for client in {c for cs in clients.values() for c in cs}:
                        await client.aclose()
        finally:
            for gateway in gateways.values():
                gateway.close()
    return results


def report(results: dict[int, dict[str, Series]]) -> None:
    print()
    print("   conc | req/s off  req/s on | on/off [rounds]      | p50 off/on ms | p99 off/on ms")
    for concurrency, series in results.items():
        off, on = series["off"], series["on"]
        rps = {name: s.requests / sum(b.wall for b in s.blocks) for name, s in series.items()}
        per_round = sorted(
            (len(a.latencies) / a.wall) / (len(b.latencies) / b.wall)
            for a, b in zip(on.blocks, off.blocks, strict=True)
        )
        lat = {name: [x * 1e3 for x in s.latencies] for name, s in series.items()}
        print(
            f"   {concurrency:4} | {rps['off']:9.0f} {rps['on']:9.0f} | "
            f"{rps['on'] / rps['off']:.3f} [{per_round[0]:.3f}-{per_round[-1]:.3f}] | "
            f"{percentile(lat['off'], 0.5):5.2f}/{percentile(lat['on'], 0.5):5.2f}   | "
            f"{percentile(lat['off'], 0.99):6.2f}/{percentile(lat['on'], 0.99):6.2f}"
        )
        errors = off.errors + on.errors
        if errors:
            print(f"          errors: {dict(errors)}")
    print("   target: on/off >= 0.97 (bookkeeping costs <= 3% of throughput)")
    # Throughput on a shared 2-core box moves +-5% between blocks; the gateway's own CPU
    # time per request is what bookkeeping adds to, and varies much less.
    print()
    print("   conc | gateway CPU ms/request off  on | on/off | bookkeeping per request")
    for concurrency, series in results.items():
        cpu_off = series["off"].cpu_per_request("off")
        cpu_on = series["on"].cpu_per_request("on")
        if cpu_off is None or cpu_on is None:
            print(f"   {concurrency:4} | (no /proc: CPU time not available)")
            continue
        print(
            f"   {concurrency:4} | {cpu_off * 1e3:26.3f} {cpu_on * 1e3:4.3f} | "
            f"{cpu_on / cpu_off:6.3f} | {(cpu_on - cpu_off) * 1e6:+.0f} us"
        )
    print(
        "   (what bookkeeping adds to each request's CPU; where the gateway's CPU is the "
        "bottleneck, that is its throughput cost)"
    )
    print()
    print("   conc | CPU ms/request, all processes, off  on | throughput on/off implied by CPU")
    for concurrency, series in results.items():
        totals = {name: _total_cpu(s, name) for name, s in series.items()}
        if totals["off"] is None or totals["on"] is None:
            continue
        print(
            f"   {concurrency:4} | {totals['off'] * 1e3:34.3f} {totals['on'] * 1e3:5.3f} | "
            f"{totals['off'] / totals['on']:.3f}"
        )
    print(
        "   (load generator + mock + gateway; valid where they keep the CPUs busy, as at "
        "concurrency 16 on 2 cores, not at 1)"
    )


def _total_cpu(series: Series, gateway: str) -> float | None:
    parts = [series.cpu_per_request(process) for process in ("bench", "mock", gateway)]
    return None if any(p is None for p in parts) else sum(p for p in parts if p is not None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--concurrency", type=int, nargs="+", default=list(PLAN))
    parser.add_argument(
        "--keep-access-log",
        action="store_true",
        help="leave the JSON access log on in the 'off' gateway too (ledger and metrics only)",
    )
    args = parser.parse_args()
    off = dict(OFF)
    if args.keep_access_log:
        del off["GATEWAY_SERVER__ACCESS_LOG"]
    plan = {c: PLAN.get(c, max(PLAN.values())) for c in args.concurrency}
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}; "
        f"load average {_loadavg()}"
    )
    print(
        f"plan: {args.rounds} rounds x (on, off) blocks, order rotated, fresh gateways each "
        "round; requests per block: "
        + ", ".join(f"c={c}: {n}" for c, n in plan.items())
        + "; cloud route to a mock upstream (same harness as bench/cloud_overhead.py)"
    )
    print("off: " + " ".join(f"{k}={v}" for k, v in off.items()))
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        policy = workdir / "cloud-only.yaml"
        policy.write_text(POLICY)
        check_policy(policy)
        mock = start_mock(workdir)
        variants = {"on": {}, "off": off}

        def start(name: str, round_: int) -> Server:
            where = workdir / f"{name}-{round_}"
            where.mkdir()
            return start_gateway(mock, policy, variants[name], where)

        try:
            results = run(measure(start, plan, args.rounds, mock))
        finally:
            mock.close()
    report(results)


if __name__ == "__main__":
    main()
