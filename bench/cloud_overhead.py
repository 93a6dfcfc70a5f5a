"""Cloud route: what the gateway adds to a call to the upstream, in one run.

A mock OpenAI-compatible upstream (a raw ASGI app under uvicorn, in its own
process) answers ``POST /v1/chat/completions`` at once with a fixed small
body. The same request body is then sent, interleaved in blocks of the same
size and with the order rotated every round:

* direct   to the mock itself
* gateway  to ``hybrid-gateway serve`` (its own process), through a policy
           that routes model ``hybrid`` straight to the cloud (no rules, no
           privacy detectors), so the gateway relays every request to the mock

by closed-loop workers, one ``httpx.AsyncClient`` (one connection) each, at
several concurrencies. Reported: p50/p99 latency, the latency the gateway adds,
throughput and its ratio gateway/direct, and the CPU time each process spends
per request (Linux only). A smaller table does the same for streamed answers.
Every answer must be a 200 (and, from the gateway, say ``x-hybrid-route:
cloud``); anything else is counted as an error, by reason.

The pids are printed so a profiler can be attached while it runs, e.g.
``py-spy record -f raw -o gateway.txt -p <gateway pid> -d 10``.

Usage: python bench/cloud_overhead.py [--rounds 3] [--scale 1.0] [--concurrency 1 16 64]
       [--no-stream]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from gateway.auth.keys import hash_key  # noqa: E402

try:
    import uvloop
except ImportError:  # pragma: no cover - uvicorn[standard] installs it on Linux and macOS
    uvloop = None

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
# (concurrency, requests per block): enough for a stable p99, short enough that
# the whole bench stays within a few minutes on a 2-core VM.
PLAN = {1: 400, 16: 2000, 64: 2000}
STREAM_PLAN = {1: 200, 16: 1000}
BODY: dict[str, Any] = {
    "model": "hybrid",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 32,
    "temperature": 0,
}
STREAM_BODY: dict[str, Any] = {**BODY, "stream": True, "stream_options": {"include_usage": True}}
POLICY = """\
version: 1
default: cloud
privacy:
  detectors: []
rules: []
"""
LITELLM_ANCHORS = (
    "LiteLLM's Python proxy (published, other hardware): +9.8 ms p99 at concurrency 1; "
    "180 vs 2,856 direct req/s at concurrency 64 (ratio 0.063)"
)
TARGETS = "added p99 <= 3 ms at concurrency 1; gateway >= 50% of direct throughput at 16"


# --- the mock upstream (runs in its own process) -----------------------------------------

_CREATED = 1_700_000_000
_COMPLETION = json.dumps(
    {
        "id": "chatcmpl-mock",
        "object": "chat.completion",
        "created": _CREATED,
        "model": "mock",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "Hello! Nice to meet you."},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
    }
).encode()


def _chunk(delta: dict[str, str], finish: str | None = None) -> dict[str, Any]:
    return {
        "id": "chatcmpl-mock",
        "object": "chat.completion.chunk",
        "created": _CREATED,
        "model": "mock",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }


_STREAM_EVENTS = [
    b"data: " + json.dumps(event).encode() + b"\n\n"
    for event in (
        _chunk({"role": "assistant", "content": ""}),
        *(_chunk({"content": word}) for word in ("Hello!", " Nice", " to", " meet", " you.")),
        _chunk({}, "stop"),
        {
            "id": "chatcmpl-mock",
            "object": "chat.completion.chunk",
            "created": _CREATED,
            "model": "mock",
            "choices": [],
            "usage": {"prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19},
        },
    )
] + [b"data: [DONE]\n\n"]


async def mock_upstream(
    scope: dict[str, Any],
    receive: Callable[[], Awaitable[dict[str, Any]]],
    send: Callable[[dict[str, Any]], Awaitable[None]],
) -> None:
    """Raw ASGI (no framework, to stay cheap): a fixed chat.completion, or its SSE stream."""
    if scope["type"] != "http":
        return  # lifespan: nothing to set up
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    if scope["method"] != "POST" or scope["path"] != "/v1/chat/completions":
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b""})
        return
    if json.loads(body).get("stream"):
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        for event in _STREAM_EVENTS:  # one write per event, as a real upstream sends them
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})
        return
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(_COMPLETION)).encode()),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": _COMPLETION})


def serve_mock(port: int, delay: float = 0.0) -> None:
    """The mock, optionally answering each request ``delay`` seconds late (a slow cloud)."""
    import uvicorn

    async def delayed(
        scope: dict[str, Any],
        receive: Callable[[], Awaitable[dict[str, Any]]],
        send: Callable[[dict[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] == "http":
            await asyncio.sleep(delay)
        await mock_upstream(scope, receive, send)

    app = delayed if delay > 0 else mock_upstream
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# --- processes ----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc); None elsewhere."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    # utime and stime are fields 14 and 15 of stat(5); [0] here is field 3
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    """A subprocess serving HTTP on loopback; stopped with SIGTERM, then killed.

    It runs in a scratch directory (whatever it writes relative to it goes away
    after) with its output in a log file there: the gateway's JSON access log
    (one line per request) is part of its cost, not of this report.
    """

    def __init__(
        self, name: str, argv: list[str], env: dict[str, str], port: int, workdir: Path
    ) -> None:
        self.name = name
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log_path = workdir / f"{name.replace(' ', '-')}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            argv, env=env, cwd=workdir, stdout=self._log, stderr=subprocess.STDOUT
        )

    def wait_ready(self, path: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(base_url=self.url, timeout=5) as client:
            while True:
                try:
                    if client.get(path).status_code < 500:
                        return
                except httpx.TransportError:
                    pass
                if self.process.poll() is not None or time.monotonic() > deadline:
                    tail = self.log_path.read_text(errors="replace").splitlines()[-20:]
                    raise RuntimeError(f"{self.name} did not start:\n" + "\n".join(tail))
                time.sleep(0.1)

    def cpu(self) -> float | None:
        return _cpu_seconds(self.process.pid)

    def close(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()


def _loadavg() -> str:
    """Other work on the machine skews everything: say how busy it was."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def _clean_env() -> dict[str, str]:
    """This environment minus GATEWAY_* settings; the repository importable from anywhere."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def start_mock(workdir: Path, delay: float = 0.0) -> Server:
    port = _free_port()
    argv = [sys.executable, str(Path(__file__).resolve()), "--serve-mock", str(port)]
    argv += ["--mock-delay", str(delay)]
    server = Server("mock upstream", argv, _clean_env(), port, workdir)
    server.wait_ready("/")  # any answer (404) means it is listening
    return server


def start_gateway(mock: Server, policy: Path, extra_env: dict[str, str], workdir: Path) -> Server:
    """The gateway as shipped (its ledger too, which writes into ``workdir``)."""
    port = _free_port()
    env = _clean_env()
    env.update(
        GATEWAY_CLOUD__BASE_URL=f"{mock.url}/v1",
        GATEWAY_CLOUD__API_KEY=API_KEY,
        # Authentication on, as shipped: the load generator's key is a client key.
        GATEWAY_AUTH__KEYS=json.dumps([{"id": "bench", "hash": hash_key(API_KEY)}]),
        GATEWAY_POLICY__FILE=str(policy),
        GATEWAY_LOCAL__N_CTX="512",
    )
    env.update(extra_env)
    argv = [sys.executable, "-m", "gateway.cli", "serve", "--port", str(port)]
    server = Server("gateway", [*argv, "--log-level", "warning"], env, port, workdir)
    server.wait_ready("/readyz")
    return server


def check_policy(policy: Path) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "policy", "check", str(policy)],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise RuntimeError(f"policy check failed:\n{result.stdout}{result.stderr}")
    return result.stdout.strip()


# --- load generation ----------------------------------------------------------------------


@dataclass
class Block:
    """One measurement: a fixed number of requests at a fixed concurrency."""

    latencies: list[float]
    wall: float
    #: failed requests by what went wrong (status, wrong route, exception type)
    errors: Counter[str]
    #: CPU seconds spent during the block, by process ("bench", "mock", "gateway")
    cpu: dict[str, float | None]

    @property
    def throughput(self) -> float:
        return (len(self.latencies) + self.errors.total()) / self.wall


@dataclass
class Series:
    blocks: list[Block] = field(default_factory=list)

    @property
    def latencies(self) -> list[float]:
        return sorted(x for b in self.blocks for x in b.latencies)

    @property
    def errors(self) -> Counter[str]:
        return sum((b.errors for b in self.blocks), Counter())

    @property
    def requests(self) -> int:
        return sum(len(b.latencies) + b.errors.total() for b in self.blocks)

    def throughput(self) -> float:
        return self.requests / sum(b.wall for b in self.blocks)

    def cpu_per_request(self, process: str) -> float | None:
        spent = [b.cpu[process] for b in self.blocks]
        if any(s is None for s in spent):
            return None
        return sum(s for s in spent if s is not None) / self.requests


def percentile(ordered: list[float], q: float) -> float:
    """Nearest-rank percentile of an already sorted list."""
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))]


Send = Callable[[httpx.AsyncClient], Coroutine[Any, Any, str | None]]


def sender(path: str, body: dict[str, Any], *, stream: bool, gateway: bool) -> Send:
    """One request: None for a full, correct answer, else what was wrong with it."""
    content = json.dumps(body).encode()
    headers = {"content-type": "application/json"}

    def problem(response: httpx.Response) -> str | None:
        if response.status_code != 200:
            return f"HTTP {response.status_code}"
        # A gateway answer that did not go to the cloud would measure the wrong thing.
        route = response.headers.get("x-hybrid-route")
        return f"route {route}" if gateway and route != "cloud" else None

    async def plain(client: httpx.AsyncClient) -> str | None:
        return problem(await client.post(path, content=content, headers=headers))

    async def streamed(client: httpx.AsyncClient) -> str | None:
        tail = b""
        async with client.stream("POST", path, content=content, headers=headers) as response:
            async for data in response.aiter_raw():
                tail = (tail + data)[-64:]
        if not tail.endswith(b"data: [DONE]\n\n"):
            return problem(response) or "stream without [DONE]"
        return problem(response)

    return streamed if stream else plain


async def run_block(
    clients: list[httpx.AsyncClient],
    send: Send,
    total: int,
    processes: dict[str, Server],
) -> Block:
    """``total`` requests from one closed-loop worker per client (a shared client repeats)."""
    latencies: list[float] = []
    errors: Counter[str] = Counter()
    remaining = total

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            start = time.perf_counter()
            try:
                problem = await send(client)
            except httpx.HTTPError as exc:
                problem = type(exc).__name__
            if problem is None:
                latencies.append(time.perf_counter() - start)
            else:
                errors[problem] += 1

    # The load generator's own collections would land in the latencies of either variant.
    gc.collect()
    gc.disable()
    cpu_before = {name: p.cpu() for name, p in processes.items()}
    bench_before = time.process_time()
    start = time.perf_counter()
    try:
        await asyncio.gather(*(worker(client) for client in clients))
    finally:
        gc.enable()
    wall = time.perf_counter() - start
    cpu: dict[str, float | None] = {"bench": time.process_time() - bench_before}
    for name, p in processes.items():
        before, after = cpu_before[name], p.cpu()
        cpu[name] = after - before if before is not None and after is not None else None
    return Block(latencies, wall, errors, cpu)


def bench_client(base_url: str, connections: int, timeout: float = 30) -> httpx.AsyncClient:
    """A client of the gateway (or the mock) with the bench's key and ``connections`` kept."""
    return httpx.AsyncClient(
        base_url=base_url,
        headers={"authorization": f"Bearer {API_KEY}"},
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        timeout=timeout,
    )


def _clients(base_url: str, concurrency: int, *, shared: bool) -> list[httpx.AsyncClient]:
    """One client per worker (default), or one client with a pool of ``concurrency``.

    httpx's pool scans every connection and queued request on each request and
    response (httpcore ``_assign_requests_to_connections``), so one client
    shared by 16-64 workers cost the load generator 2.2x the CPU per request
    against the mock, with a p99 six to seven times higher, on our 2-core VM
    (``--shared-client``): on two cores that CPU is taken from the gateway.
    """

    def client(connections: int) -> httpx.AsyncClient:
        return bench_client(base_url, connections)

    if shared:
        return [client(concurrency)] * concurrency
    return [client(1) for _ in range(concurrency)]


async def measure(
    mock: Server,
    gateway: Server,
    plan: dict[int, int],
    rounds: int,
    *,
    stream: bool,
    shared_client: bool,
) -> dict[int, dict[str, Series]]:
    body = STREAM_BODY if stream else BODY
    path = "/v1/chat/completions"
    targets = {"direct": mock, "gateway": gateway}
    # The mock works for both; the gateway's CPU is read in every block too (idle in direct).
    processes = {"mock": mock, "gateway": gateway}
    results: dict[int, dict[str, Series]] = {}
    for index, (concurrency, total) in enumerate(plan.items()):
        clients = {
            name: _clients(server.url, concurrency, shared=shared_client)
            for name, server in targets.items()
        }
        sends = {
            name: sender(path, body, stream=stream, gateway=name == "gateway") for name in targets
        }
        series = {name: Series() for name in targets}
        try:
            for name in targets:  # warm-up: open every connection, fill the caches
                await run_block(clients[name], sends[name], max(50, 4 * concurrency), {})
            for round_ in range(rounds):
                # rotate the order: whichever runs second may find a warmer (or hotter) box
                order = list(targets) if (round_ + index) % 2 == 0 else list(reversed(targets))
                for name in order:
                    block = await run_block(clients[name], sends[name], total, processes)
                    series[name].blocks.append(block)
        finally:
            for client in {c for cs in clients.values() for c in cs}:
                await client.aclose()
        results[concurrency] = series
    return results


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """The load generator's loop: uvloop when installed (uvicorn[standard] brings it), as
    the gateway and the mock use it too."""
    if uvloop is None:
        return asyncio.run(coroutine)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


# --- report -------------------------------------------------------------------------------


def _ms(seconds: float, sign: str = "") -> str:
    return f"{seconds * 1000:{sign}.2f}"


def report(title: str, results: dict[int, dict[str, Series]]) -> dict[int, dict[str, float]]:
    print()
    print(title)
    print(
        f"   {'conc':>4} {'n':>5} | {'direct p50':>10} {'p99':>6} | {'gateway p50':>11} {'p99':>6} "
        f"| {'added p50':>9} {'p99':>7} | {'direct rps':>10} {'gw rps':>6} "
        f"| {'gw/direct [rounds]':>19} | {'errors':>6}"
    )
    summary: dict[int, dict[str, float]] = {}
    failures: list[str] = []
    for concurrency, series in results.items():
        direct, gateway = series["direct"], series["gateway"]
        d_lat, g_lat = direct.latencies, gateway.latencies
        d50, d99 = percentile(d_lat, 0.50), percentile(d_lat, 0.99)
        g50, g99 = percentile(g_lat, 0.50), percentile(g_lat, 0.99)
        rounds = [
            g.throughput / d.throughput for d, g in zip(direct.blocks, gateway.blocks, strict=True)
        ]
        ratio = gateway.throughput() / direct.throughput()
        errors = direct.errors.total() + gateway.errors.total()
        print(
            f"   {concurrency:>4} {direct.requests:>5} | {_ms(d50):>10} {_ms(d99):>6} "
            f"| {_ms(g50):>11} {_ms(g99):>6} | {_ms(g50 - d50, '+'):>9} {_ms(g99 - d99, '+'):>7} "
            f"| {direct.throughput():>10.0f} {gateway.throughput():>6.0f} "
            f"| {f'{ratio:.3f} [{min(rounds):.2f}-{max(rounds):.2f}]':>19} | {errors:>6}"
        )
        for name, s in series.items():
            failures += [f"{name} c={concurrency}: {why} x{n}" for why, n in s.errors.items()]
        summary[concurrency] = {"added_p99": g99 - d99, "ratio": ratio}
    print(
        "   ms; n = requests per variant; percentiles pooled over rounds; rps = requests / wall "
        "time; [rounds] = min-max of per-round ratios"
    )
    if failures:
        print(f"   errors: {'; '.join(failures)}")
    print("   CPU ms per request by process (bench = the load generator):")
    print(
        f"   {'conc':>4} | {'direct: bench':>13} {'mock':>5} | {'gateway: bench':>14} {'mock':>5} "
        f"{'gateway':>7}"
    )
    for concurrency, series in results.items():
        direct, gateway = series["direct"], series["gateway"]

        def cpu(s: Series, process: str) -> str:
            value = s.cpu_per_request(process)
            return "n/a" if value is None else _ms(value)

        print(
            f"   {concurrency:>4} | {cpu(direct, 'bench'):>13} {cpu(direct, 'mock'):>5} "
            f"| {cpu(gateway, 'bench'):>14} {cpu(gateway, 'mock'):>5} {cpu(gateway, 'gateway'):>7}"
        )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply the requests per block by this"
    )
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=list(PLAN), help="client concurrencies"
    )
    parser.add_argument("--no-stream", action="store_true", help="skip the streaming table")
    parser.add_argument(
        "--gateway-env",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="extra GATEWAY_* setting for the gateway process (repeatable), for experiments",
    )
    parser.add_argument(
        "--shared-client",
        action="store_true",
        help="one httpx client per target with a pool of `concurrency` connections, instead "
        "of one client per worker (costs the load generator more CPU)",
    )
    parser.add_argument("--serve-mock", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--mock-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_mock is not None:
        serve_mock(args.serve_mock, args.mock_delay)
        return

    def requests(concurrency: int, table: dict[int, int]) -> int:
        base = table.get(concurrency, max(table.values()))
        return max(concurrency, round(base * args.scale))

    plan = {c: requests(c, PLAN) for c in args.concurrency}
    stream_plan = {c: requests(c, STREAM_PLAN) for c in args.concurrency if c in STREAM_PLAN}
    extra_env = dict(item.split("=", 1) for item in args.gateway_env)

    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"httpx {httpx.__version__}; load average {_loadavg()}"
    )
    print(
        f"load generator: closed-loop workers, "
        f"{'one shared httpx.AsyncClient' if args.shared_client else 'one httpx.AsyncClient each'}"
        f" (HTTP/1.1), {'uvloop' if uvloop is not None else 'asyncio'} event loop"
    )
    print(
        f"caveat: the load generator (this process), the mock upstream and the gateway share "
        f"these {os.cpu_count()} CPUs; on a 2-core box the gateway's throughput ratio is bounded "
        f"by CPU contention, not only by its own cost"
    )
    print(
        f"plan: {args.rounds} rounds x (direct, gateway) blocks, order rotated; requests per "
        f"block: {', '.join(f'c={c}: {n}' for c, n in plan.items())}"
        + (f"; gateway env {extra_env}" if extra_env else "")
    )
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        policy = Path(tmp) / "cloud-only.yaml"
        policy.write_text(POLICY)
        print(f"policy: default cloud, no rules, no privacy detectors ({check_policy(policy)})")
        servers: list[Server] = []
        try:
            mock = start_mock(Path(tmp))
            servers.append(mock)
            gateway = start_gateway(mock, policy, extra_env, Path(tmp))
            servers.append(gateway)
            print(f"mock upstream pid {mock.process.pid}, gateway pid {gateway.process.pid}")
            shared = args.shared_client
            results = run(
                measure(mock, gateway, plan, args.rounds, stream=False, shared_client=shared)
            )
            streamed = (
                run(
                    measure(
                        mock, gateway, stream_plan, args.rounds, stream=True, shared_client=shared
                    )
                )
                if stream_plan and not args.no_stream
                else {}
            )
        finally:
            for server in reversed(servers):
                server.close()

    summary = report("1. non-streamed chat completion, gateway vs direct", results)
    if streamed:
        report("2. streamed chat completion (8 events + [DONE]), full stream read", streamed)
    print()
    print(f"published anchor: {LITELLM_ANCHORS}")
    measured = []
    if 1 in summary:
        measured.append(f"added p99 at 1: {summary[1]['added_p99'] * 1000:+.2f} ms")
    if 16 in summary:
        measured.append(f"throughput ratio at 16: {summary[16]['ratio']:.3f}")
    print(f"targets: {TARGETS}" + (f"; measured {', '.join(measured)}" if measured else ""))
    print(f"bench wall time: {time.monotonic() - started:.0f} s; load average {_loadavg()}")


if __name__ == "__main__":
    main()
