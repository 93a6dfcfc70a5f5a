"""Load-aware offload: a burst of concurrent requests, local-only vs latency-first.

Two gateway processes on the bundled model, in front of the same cloud
stand-in (the mock upstream of ``cloud_overhead.py``, answering every request
after ``--cloud-delay`` seconds, 0.3 s by default: a hosted model's typical
time to first token):

* local-only      policy ``default: local``, no rules: every request queues
                  for the one local generation slot
* latency-first   ``deploy/policies/latency-first.yaml`` as shipped: a request
                  that would wait more than 0.5 s for the local model goes to
                  the cloud, and the confidence gate escalates weak answers

Each round sends the same burst (``--burst`` concurrent streamed chat requests,
greedy, ``--max-tokens`` each) to one then the other (order rotated). Reported:
time to first token and total latency p50/p95 per variant, their ratios
(latency-first / local-only), and where the requests went.

Usage: python bench/offload.py [--rounds 3] [--burst 16] [--max-tokens 64] [--cloud-delay 0.3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cloud_overhead import (  # noqa: E402  (a sibling script, not a package)
    Server,
    _loadavg,
    bench_client,
    check_policy,
    percentile,
    run,
    start_gateway,
    start_mock,
)

ROOT = Path(__file__).resolve().parents[1]
LOCAL_ONLY = """\
version: 1
default: local
privacy:
  detectors: []
rules: []
"""
QUESTIONS = [
    "What is the capital of France?",
    "Name three primary colours.",
    "Who wrote Romeo and Juliet?",
    "What is the boiling point of water in Celsius?",
    "Give me a synonym for happy.",
    "How many legs does a spider have?",
    "What language is spoken in Brazil?",
    "What is the largest planet in the solar system?",
    "Translate 'thank you' into Spanish.",
    "What colour is the sky on a clear day?",
    "Name a mammal that can fly.",
    "What is the chemical symbol for gold?",
    "Which ocean is the largest?",
    "What do bees make?",
    "How many days are in a week?",
    "What is the opposite of cold?",
]


async def one(
    client: httpx.AsyncClient, question: str, max_tokens: int
) -> tuple[float, float, str, int]:
    """(time to first content byte, total, route, status) of one streamed request."""
    body = {
        "model": "hybrid",
        "messages": [{"role": "user", "content": question}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    start = time.perf_counter()
    first: float | None = None
    async with client.stream("POST", "/v1/chat/completions", json=body) as response:
        async for line in response.aiter_lines():
            if first is None and line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    first = time.perf_counter() - start
        total = time.perf_counter() - start
        route = response.headers.get("x-hybrid-route", "?")
        return (first if first is not None else total), total, route, response.status_code


async def burst(url: str, size: int, max_tokens: int) -> list[tuple[float, float, str, int]]:
    async with bench_client(url, size, timeout=300) as client:
        questions = [QUESTIONS[i % len(QUESTIONS)] for i in range(size)]
        return await asyncio.gather(*(one(client, q, max_tokens) for q in questions))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=16)
    parser.add_argument("--max-tokens", type=int, default=64)
    parser.add_argument("--cloud-delay", type=float, default=0.3)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}; "
        f"load average {_loadavg()}"
    )
    print(
        f"plan: {args.rounds} rounds x (local-only, latency-first) bursts of {args.burst} "
        f"concurrent streamed requests, greedy, max_tokens {args.max_tokens}; "
        f"cloud stand-in answers after {args.cloud_delay * 1000:.0f} ms"
    )
    samples: dict[str, list[tuple[float, float, str, int]]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        local_only = workdir / "local-only.yaml"
        local_only.write_text(LOCAL_ONLY)
        policies = {
            "local-only": local_only,
            "latency-first": ROOT / "deploy" / "policies" / "latency-first.yaml",
        }
        for policy in policies.values():
            check_policy(policy)
        servers: list[Server] = []
        try:
            mock = start_mock(workdir, delay=args.cloud_delay)
            servers.append(mock)
            gateways = {}
            for name, policy in policies.items():
                gateway = start_gateway(mock, policy, {}, workdir)
                servers.append(gateway)
                gateways[name] = gateway
            samples = {name: [] for name in gateways}
            for gateway in gateways.values():  # warm-up: page in, fill caches
                run(burst(gateway.url, 2, args.max_tokens))
            for round_ in range(args.rounds):
                order = list(gateways) if round_ % 2 == 0 else list(reversed(gateways))
                for name in order:
                    samples[name] += run(burst(gateways[name].url, args.burst, args.max_tokens))
        finally:
            for server in reversed(servers):
                server.close()

    def stats(name: str, index: int) -> tuple[float, float]:
        values = sorted(s[index] for s in samples[name] if s[3] == 200)
        return statistics.median(values), percentile(values, 0.95)

    print()
    print("| Burst | TTFT p50 ms | TTFT p95 ms | total p50 ms | total p95 ms | routes | statuses |")
    print("|---|---|---|---|---|---|---|")
    for name in samples:
        t50, t95 = stats(name, 0)
        l50, l95 = stats(name, 1)
        routes = Counter(s[2] for s in samples[name])
        statuses = Counter(s[3] for s in samples[name])
        print(
            f"| {name} | {t50 * 1000:.0f} | {t95 * 1000:.0f} | {l50 * 1000:.0f} | "
            f"{l95 * 1000:.0f} | {dict(routes)} | {dict(statuses)} |"
        )
    (b50, b95), (f50, f95) = stats("local-only", 0), stats("latency-first", 0)
    (c50, c95), (g50, g95) = stats("local-only", 1), stats("latency-first", 1)
    print()
    print(
        f"latency-first / local-only: TTFT p50 {f50 / b50:.2f}, p95 {f95 / b95:.2f}; "
        f"total p50 {g50 / c50:.2f}, p95 {g95 / c95:.2f} (below 1 = offload helps)"
    )


if __name__ == "__main__":
    main()
