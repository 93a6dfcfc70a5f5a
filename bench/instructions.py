"""Instructions per relayed cloud request, counted by callgrind: a repeatable A/B.

CPU time on the shared 2-core bench VM moves +-10% between identical runs
while anything else runs; callgrind's instruction counts for the same code and
inputs repeat to about 0.2% (to a few % when other jobs slow the run down: the
ledger's timed flushes then write smaller batches). This drives the app in-process (no sockets, no
uvicorn) with a minimal ASGI caller, the cloud answered by
``httpx.MockTransport`` and a fake local engine (valgrind cannot run the
llama.cpp build here: it uses AVX-512), 16 concurrent workers, and counts the
instructions of the measured requests only (``callgrind_control -i on/off``).

It sees the Python side of a cloud request: middlewares, FastAPI, routing,
the cloud client above its transport, streaming, bookkeeping. It does not see
uvicorn's protocol, the aiohttp transport, or kernel time (socket writes), and
instructions are not time (tight loops run more of them per ns than the
interpreter's dispatch does): use it to compare two versions of the code, and
``cloud_overhead.py`` for what they do to throughput.

Usage:
  python bench/instructions.py [--baseline-root DIR | --bookkeeping] [--stream] [--requests 320]
                               [--off | --no-metrics | --no-ledger | --no-access-log]

``--baseline-root`` runs the same measurement against another checkout (e.g.
``git worktree add /tmp/base HEAD~3``) and prints the ratio; ``--bookkeeping``
measures this checkout with the ledger, metrics and access log on and off and
prints what they add. Needs valgrind.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = 16
PREFILL_ROWS = 10_000
POLICY = "version: 1\ndefault: cloud\nprivacy:\n  detectors: []\nrules: []\n"
BODY: dict[str, Any] = {
    "model": "hybrid",
    "messages": [{"role": "user", "content": "Say hello in one short sentence."}],
    "max_tokens": 32,
    "temperature": 0,
}
SSE = "text/event-stream"
JSON = "application/json"
SWITCHES = {
    "--off": {"GATEWAY_LEDGER__ENABLED": "false", "GATEWAY_SERVER__METRICS": "false"},
    "--no-metrics": {"GATEWAY_SERVER__METRICS": "false"},
    "--no-ledger": {"GATEWAY_LEDGER__ENABLED": "false"},
}


def child(args: argparse.Namespace) -> None:
    """Runs under valgrind, in the checkout given by PYTHONPATH."""
    import httpx

    from bench.cloud_overhead import _COMPLETION, _STREAM_EVENTS
    from gateway import Settings, create_app
    from gateway.cloud import CloudClient
    from tests.fakes import FakeEngine

    access = logging.getLogger("gateway.access")
    # What serve's sys.stderr is: a text layer writing through to an unbuffered file.
    devnull = io.TextIOWrapper(io.FileIO(os.devnull, "w"), write_through=True)
    try:  # the serve set-up of this checkout's access log
        from gateway import access_log

        access_log.configure(True, devnull)
    except ImportError:  # checkouts from before gateway/access_log.py
        handler = logging.StreamHandler(devnull)
        handler.setFormatter(logging.Formatter("%(message)s"))
        access.addHandler(handler)
        access.propagate = False
        access.setLevel(logging.INFO)
    if args.off or args.no_access_log:
        access.disabled = True

    events = b"".join(_STREAM_EVENTS)

    def upstream(request: httpx.Request) -> httpx.Response:
        if json.loads(request.content).get("stream"):
            return httpx.Response(200, content=events, headers={"content-type": SSE})
        return httpx.Response(200, content=_COMPLETION, headers={"content-type": JSON})

    app = create_app(
        Settings(),
        engine_factory=lambda _: FakeEngine(),
        cloud_factory=lambda s: CloudClient(s.cloud, transport=httpx.MockTransport(upstream)),
    )
    body = json.dumps(
        {**BODY, "stream": True, "stream_options": {"include_usage": True}} if args.stream else BODY
    ).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]

    async def call(state: dict[str, Any]) -> None:
        scope = {
            "type": "http",
            # what uvicorn says (2.3): Starlette streams differently from 2.4 on
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": "POST",
            "scheme": "http",
            "path": "/v1/chat/completions",
            "raw_path": b"/v1/chat/completions",
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"gateway"), *headers],
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 8080),
            "state": dict(state),
        }
        delivered = False
        finished = asyncio.Event()
        statuses: list[int] = []

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            await finished.wait()
            return {"type": "http.disconnect"}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                statuses.append(message["status"])
            elif not message.get("more_body"):
                finished.set()

        await app(scope, receive, send)
        if statuses != [200]:
            raise RuntimeError(f"expected one 200, got {statuses}")

    async def workers(state: dict[str, Any], each: int) -> None:
        async def worker() -> None:
            for _ in range(each):
                await call(state)

        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))

    async def main() -> None:
        async with app.router.lifespan_context(app) as state:
            await workers(state, 6)  # warm-up: caches, lazy imports, first connections
            ledger = getattr(state.get("services"), "ledger", None)
            if ledger is not None:
                await prefill(ledger)
            gc.collect()
            gc.disable()  # collections would land wherever allocation triggers them
            toggle = ["callgrind_control", "-i"]
            subprocess.run([*toggle, "on", str(os.getpid())], check=True, capture_output=True)
            await workers(state, args.requests // CONCURRENCY)
            if ledger is not None:
                await ledger.flush()  # every measured request's row written inside the count
            subprocess.run([*toggle, "off", str(os.getpid())], check=True, capture_output=True)
            gc.enable()

    async def prefill(ledger: Any) -> None:
        """A ledger of PREFILL_ROWS rows, as after some hours of traffic (the cost of an
        insert grows with the indexes), and nothing queued when the count starts."""
        await ledger.flush()
        store = ledger.store
        template = (await store.query())[0]  # a warm-up request's row
        copy = type(template)
        for _ in range(PREFILL_ROWS // 1000):
            await store.write([copy(template.record, template.costs) for _ in range(1000)])

    import uvloop

    uvloop.run(main())


def measure(root: Path, args: argparse.Namespace, flags: list[str]) -> float:
    """Instructions per request in the checkout at ``root``."""
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        (work / "policy.yaml").write_text(POLICY)
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(
            PYTHONPATH=str(root),
            GATEWAY_CLOUD__BASE_URL="http://cloud.test/v1",
            GATEWAY_CLOUD__API_KEY="bench-key",
            GATEWAY_AUTH__DISABLED="true",
            GATEWAY_POLICY__FILE=str(work / "policy.yaml"),
            GATEWAY_LEDGER__PATH=str(work / "ledger.sqlite3"),
            # Writes in full batches (as under load) and at the end, never on a timer:
            # valgrind's slowness would otherwise split them into more, smaller ones.
            GATEWAY_LEDGER__FLUSH_INTERVAL_S="3600",
        )
        for flag in flags:
            env.update(SWITCHES.get(flag, {}))
        script = root / "bench" / "instructions.py"
        if not script.exists():  # an older checkout: this file, run against its code
            script = Path(__file__).resolve()
        result = subprocess.run(
            [
                "valgrind",
                "--tool=callgrind",
                "--instr-atstart=no",
                f"--callgrind-out-file={work / 'callgrind.out'}",
                sys.executable,
                str(script),
                "--child",
                *flags,
            ],
            env=env,
            cwd=work,
            capture_output=True,
            text=True,
        )
        found = re.search(r"Collected : (\d+)", result.stderr)
        if result.returncode != 0 or found is None:
            raise RuntimeError(f"callgrind run failed in {root}:\n{result.stderr[-3000:]}")
        return int(found.group(1)) / (args.requests // CONCURRENCY * CONCURRENCY)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-root", type=Path, help="another checkout to compare with")
    parser.add_argument("--stream", action="store_true", help="streamed requests (SSE)")
    parser.add_argument("--requests", type=int, default=320, help="measured requests")
    parser.add_argument("--off", action="store_true", help="ledger, metrics, access log off")
    parser.add_argument("--no-metrics", action="store_true")
    parser.add_argument("--no-ledger", action="store_true")
    parser.add_argument("--no-access-log", action="store_true")
    parser.add_argument(
        "--bookkeeping", action="store_true", help="also measure with --off and compare"
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        sys.path.insert(0, os.environ.get("PYTHONPATH", str(ROOT)))
        child(args)
        return
    if shutil.which("valgrind") is None:
        # Reported, not failed: make bench runs everything else without it.
        print("skipped: valgrind is not installed (Debian: apt install valgrind)")
        return
    flags = [a for a in sys.argv[1:] if a in (*SWITCHES, "--no-access-log", "--stream")]
    flags += ["--requests", str(args.requests)]
    kind = "streamed" if args.stream else "non-streamed"
    print(f"cloud route, {kind}, {args.requests} requests at concurrency {CONCURRENCY}, in-process")
    here = measure(ROOT, args, flags)
    print(f"  this checkout ({ROOT}): {here / 1000:,.0f}K instructions per request")
    if args.bookkeeping:
        bare = measure(ROOT, args, [*flags, "--off"])
        print(f"  without ledger, metrics and access log: {bare / 1000:,.0f}K")
        print(
            f"  bookkeeping adds {(here - bare) / 1000:,.0f}K instructions per request, "
            f"{here / bare - 1:.1%} (target for throughput: <= 3%)"
        )
    if args.baseline_root is not None:
        base = measure(args.baseline_root.resolve(), args, flags)
        print(f"  baseline ({args.baseline_root}): {base / 1000:,.0f}K instructions per request")
        print(f"  ratio this/baseline: {here / base:.3f}")


if __name__ == "__main__":
    main()
