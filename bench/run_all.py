"""Run every benchmark in bench/ and write docs/benchmarks.md.

Each benchmark is a script that measures its baseline and the gateway in the
same run and prints its own tables (medians, spreads, ratios). This runs them
one after another, in a fixed order, and writes one Markdown file: the
machine, the command, and each benchmark's output as it printed it, with what
it compares and its target. A benchmark that fails is reported as failed in
the file (with its last output lines) and the others still run; the exit
status is 1 if any failed.

Usage: python bench/run_all.py [--out docs/benchmarks.md] [--quick] [--only NAME ...]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import os
import platform
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Bench:
    name: str
    script: str
    what: str
    target: str
    args: tuple[str, ...] = ()
    quick: tuple[str, ...] = ()


BENCHES = (
    Bench(
        "local-path",
        "local_path.py",
        "gateway local route vs raw `Llama.generate` token loop, same prompt tokens; "
        "per-token logprob tracking vs plain generation",
        ">= 0.95 of raw decode tok/s and TTFT; logprob tracking <= 1.03 time ratio",
        ("--rounds", "5"),
        ("--rounds", "2"),
    ),
    Bench(
        "llama-bench",
        "llama_bench.py",
        "llama-cpp-python vs llama.cpp's own llama-bench on the same GGUF and threads; "
        "decode vs the memory-bandwidth bound",
        "report the gap and why",
        ("--rounds", "5"),
        ("--rounds", "2"),
    ),
    Bench(
        "cloud-overhead",
        "cloud_overhead.py",
        "gateway cloud route vs direct calls to a fast mock upstream, c = 1/16/64",
        "<= 3 ms added p99 at c=1; >= 50% of direct throughput at c=16",
        (),
        ("--rounds", "2", "--scale", "0.3"),
    ),
    Bench(
        "offload",
        "offload.py",
        "burst of 16 concurrent requests: local-only vs latency-first policy with a cloud stand-in",
        "report p50/p95 ratios",
        (),
        ("--rounds", "1"),
    ),
    Bench(
        "ledger-overhead",
        "ledger_overhead.py",
        "ledger + metrics + access log on vs off, cloud route",
        "<= 3% throughput cost",
        (),
        ("--rounds", "2"),
    ),
    Bench(
        "ledger-store",
        "ledger_store.py",
        "CPU per ledger row written to SQLite: as shipped vs random row keys, "
        "sqlite3's adapter-miss path and row-by-row executemany (the earlier writes)",
        "report",
        (),
        ("--rounds", "1", "--prefill", "2000", "--batches", "20"),
    ),
    Bench(
        "instructions",
        "instructions.py",
        "callgrind instruction counts of a cloud request in-process (repeatable where CPU "
        "time is not): bookkeeping on vs off",
        "report; compare checkouts with --baseline-root",
        ("--bookkeeping",),
        ("--bookkeeping", "--requests", "64"),
    ),
    Bench(
        "memory",
        "memory.py",
        "gateway RSS idle and under load vs a bare llama-cpp-python process",
        "report; memory stays bounded under load",
        (),
        ("--rounds", "2"),
    ),
    Bench(
        "quantisation",
        "quantisation.py",
        "Q4_0 / Q4_1 / Q8_0 of the embedded model and 1 vs all threads: speed, memory, "
        "accuracy on a slice of TriviaQA and SciQ",
        "report, so the README can recommend settings",
        ("--rounds", "3", "--items", "40"),
        ("--rounds", "1", "--items", "5"),
    ),
    Bench(
        "router-decision",
        "router_decision.py",
        "Policy.decide per request, by policy and prompt size",
        "report",
    ),
)


def machine() -> list[str]:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory = ""
    try:
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        memory = f", {kib / 2**20:.0f} GiB RAM"
    except (OSError, ValueError, IndexError):
        pass
    flags = subprocess.run(
        ["sh", str(ROOT / "deploy" / "llama_cmake_args.sh")], capture_output=True, text=True
    ).stdout.strip()
    commit = subprocess.run(
        ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    return [
        f"- Machine: {platform.machine()}, {cpu}, {os.cpu_count()} CPUs{memory}, "
        f"{platform.system()} {platform.release()}",
        f"- Python {platform.python_version()}, "
        f"llama-cpp-python {importlib.metadata.version('llama-cpp-python')} built with "
        f"`{flags}`",
        f"- Commit {commit or 'unknown'}, "
        f"{datetime.datetime.now(datetime.UTC).strftime('%Y-%m-%d %H:%M UTC')}",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--quick", action="store_true", help="fewer rounds (a smoke run)")
    parser.add_argument("--only", nargs="+", choices=[b.name for b in BENCHES])
    args = parser.parse_args()
    selected = [b for b in BENCHES if not args.only or b.name in args.only]
    command = "make bench" if not (args.quick or args.only) else " ".join(sys.argv)
    sections: list[str] = []
    failed: list[str] = []
    for bench in selected:
        argv = [sys.executable, str(ROOT / "bench" / bench.script)]
        argv += list(bench.quick if args.quick else bench.args)
        print(f"== {bench.name}: {' '.join(argv[1:])}", flush=True)
        started = time.monotonic()
        result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True)
        took = time.monotonic() - started
        sys.stdout.write(result.stdout)
        sys.stderr.write(result.stderr[-4000:] if result.returncode else "")
        output = result.stdout.strip()
        if result.returncode != 0:
            failed.append(bench.name)
            tail = "\n".join(result.stderr.strip().splitlines()[-15:])
            output += f"\n\nFAILED (exit {result.returncode}):\n{tail}"
        sections += [
            f"## {bench.name}",
            "",
            f"Compares: {bench.what}. Target: {bench.target}.",
            f"Command: `{' '.join(['python', 'bench/' + bench.script, *argv[2:]])}` ({took:.0f} s)",
            "",
            "```",
            output,
            "```",
            "",
        ]
    header = [
        "# Benchmarks",
        "",
        f"Written by `{command}` (bench/run_all.py); do not edit by hand. Every benchmark "
        "measures its baseline and the gateway in the same run, interleaved, and prints "
        "medians, spreads and ratios. Benchmarks report; they do not pass or fail. The "
        "load generator, the gateway and any stand-in upstream share this machine's CPUs, "
        "and other work on a shared VM moves results by +-5-15% between runs.",
        "",
        *machine(),
        "",
    ]
    changes = ROOT / "bench" / "CHANGES.md"
    if changes.exists():
        sections += [changes.read_text().strip(), ""]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(header + sections))
    print(f"wrote {args.out}" + (f"; FAILED: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
