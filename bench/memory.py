"""Resident memory: the gateway on the default model, idle and under load.

Baseline in the same run: a bare Python process that loads the same GGUF
with llama-cpp-python (same context size and threads) and generates once, so
the difference is what the gateway itself adds (FastAPI, uvicorn, httpx,
pydantic, numpy, prometheus-client, the ledger, buffers).

The gateway (local-only policy, ledger and metrics on as shipped) is measured
idle after start-up, then during ``--rounds`` bursts of ``--burst`` concurrent
requests (half streamed), sampling VmRSS every 20 ms; the peak is VmHWM. RSS
after each round shows whether memory keeps growing with traffic. Requests
beyond the local queue (``GATEWAY_LOCAL__MAX_WAITING``) are refused with 503,
which is part of how memory stays bounded.

Usage: python bench/memory.py [--rounds 3] [--burst 64] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cloud_overhead import (  # noqa: E402  (a sibling script, not a package)
    Server,
    _clean_env,
    _loadavg,
    bench_client,
    run,
    start_gateway,
    start_mock,
)

N_CTX = 4096
LOCAL_ONLY = "version: 1\ndefault: local\nprivacy:\n  detectors: []\nrules: []\n"
BARE = f"""
import json, sys
from pathlib import Path
import llama_cpp
from local_model.model_path import resolve_model_path
def status():
    fields = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines())
    return {{k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}}
llm = llama_cpp.Llama(str(resolve_model_path(None)), n_ctx={N_CTX}, verbose=False)
loaded = status()
for _ in llm.generate(llm.tokenize(b"Hello, how are you?"), temp=0.0):
    if llm.n_tokens >= 160:
        break
print(json.dumps({{"loaded": loaded, "after": status()}}))
"""


def status_kib(pid: int) -> dict[str, int]:
    text = Path(f"/proc/{pid}/status").read_text()
    fields = dict(line.split(":", 1) for line in text.splitlines() if ":" in line)
    return {k: int(fields[k].split()[0]) for k in ("VmRSS", "VmHWM")}


def mib(kib: int) -> str:
    return f"{kib / 1024:.0f}"


async def burst(url: str, size: int, max_tokens: int) -> Counter[int]:
    async def one(client: httpx.AsyncClient, index: int) -> int:
        body = {
            "model": "hybrid",
            "messages": [{"role": "user", "content": f"Tell me a fact about the number {index}."}],
            "max_tokens": max_tokens,
            "temperature": 0,
            "stream": index % 2 == 0,
        }
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            await response.aread()
            return response.status_code

    async with bench_client(url, size, timeout=300) as client:
        return Counter(await asyncio.gather(*(one(client, i) for i in range(size))))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--burst", type=int, default=64)
    parser.add_argument("--max-tokens", type=int, default=32)
    args = parser.parse_args()
    print(f"load average {_loadavg()}; n_ctx {N_CTX}; bursts of {args.burst}, half streamed")

    bare = json.loads(
        subprocess.run(
            [sys.executable, "-c", BARE],
            env=_clean_env(),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
    )
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        policy = workdir / "local-only.yaml"
        policy.write_text(LOCAL_ONLY)
        servers: list[Server] = []
        try:
            mock = start_mock(workdir)
            servers.append(mock)
            gateway = start_gateway(mock, policy, {"GATEWAY_LOCAL__N_CTX": str(N_CTX)}, workdir)
            servers.append(gateway)
            pid = gateway.process.pid
            idle = status_kib(pid)
            samples: list[int] = []
            stop = threading.Event()

            def sample() -> None:
                while not stop.wait(0.02):
                    samples.append(status_kib(pid)["VmRSS"])

            sampler = threading.Thread(target=sample, daemon=True)
            sampler.start()
            after_rounds: list[int] = []
            statuses: Counter[int] = Counter()
            for _ in range(args.rounds):
                statuses += run(burst(gateway.url, args.burst, args.max_tokens))
                after_rounds.append(status_kib(pid)["VmRSS"])
            stop.set()
            sampler.join()
            peak = status_kib(pid)["VmHWM"]
        finally:
            for server in reversed(servers):
                server.close()

    print()
    print("| Process | RSS MiB | ratio to bare llama-cpp-python |")
    print("|---|---|---|")
    base = bare["after"]["VmRSS"]
    print(f"| bare llama-cpp-python, model loaded | {mib(bare['loaded']['VmRSS'])} | |")
    print(f"| bare llama-cpp-python, after a generation | {mib(base)} | 1.00 |")
    print(f"| gateway idle, after start-up | {mib(idle['VmRSS'])} | {idle['VmRSS'] / base:.2f} |")
    sampled = f" (sampled max {mib(max(samples))})" if samples else ""
    print(f"| gateway under load, peak (VmHWM) | {mib(peak)}{sampled} | {peak / base:.2f} |")
    for index, rss in enumerate(after_rounds, 1):
        print(f"| gateway after burst {index} | {mib(rss)} | {rss / base:.2f} |")
    print()
    print(
        f"gateway adds {(idle['VmRSS'] - base) / 1024:.0f} MiB idle; "
        f"{(after_rounds[-1] - after_rounds[0]) / 1024:+.0f} MiB from burst 1 to {args.rounds}; "
        f"statuses {dict(statuses)}"
    )


if __name__ == "__main__":
    main()
