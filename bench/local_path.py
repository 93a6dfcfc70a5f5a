"""Local path: the gateway's local route against raw llama-cpp-python, in one run.

Baselines, measured interleaved with the gateway on the same prompt tokens,
greedy, same thread count, prompt evaluated from scratch every time:

* raw      ``Llama.generate`` token loop (llama-cpp-python's fastest path)
* gateway  ``POST /v1/chat/completions`` streamed from ``hybrid-gateway serve``
           in a subprocess, timed by the client (HTTP, SSE, JSON included)

and, in-process, the cost of tracking per-token log-probabilities:

* plain    the raw loop
* lse      the raw loop + log-sum-exp over the last logits row per token (what
           the engine does for every token)
* lse+entropy  the same + the token's entropy (what the engine adds when the
           policy's gate uses an entropy signal)
* logits_all  llama-cpp-python's own logprobs path (``logits_all=True`` +
           ``create_completion(logprobs=1)``), for reference

Usage: python bench/local_path.py [--rounds 3] [--max-tokens 128]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import llama_cpp
import numpy as np

from gateway.auth.keys import hash_key
from local_model.chat_template import ChatTemplate
from local_model.logprobs import log_normalizer, log_normalizer_and_entropy
from local_model.model_path import embedded_model_path
from local_model.types import ChatMessage

API_KEY = "bench-key"

PROMPTS = [
    "Explain how a bicycle works.",
    "Write a story about a dragon who learns to cook.",
    "List ten facts about the ocean, one per line.",
    "Describe the water cycle to a ten-year-old.",
]
N_CTX = 2048
THREADS = os.cpu_count() or 1


# In-process variants of section 2, run in rotating order.
TRACKING = ["plain", "lse", "lse+entropy"]


@dataclass
class Run:
    ttft: float
    decode_tps: float
    total: float
    tokens: int
    #: seconds spent in per-token work on the decode thread (logprob tracking)
    tracked: float = 0.0


@dataclass
class Series:
    runs: list[Run] = field(default_factory=list)

    def median(self, attr: str) -> float:
        return statistics.median(getattr(r, attr) for r in self.runs)

    def spread(self, attr: str) -> tuple[float, float]:
        values = [getattr(r, attr) for r in self.runs]
        return min(values), max(values)


def _timed_loop(tokens: Iterator[int], max_tokens: int, per_token: Callable[[int], None]) -> Run:
    start = time.perf_counter()
    first = last = start
    count = 0
    tracked = 0.0
    for count, token in enumerate(tokens, 1):
        last = time.perf_counter()
        if count == 1:
            first = last
        per_token(token)
        tracked += time.perf_counter() - last
        if count >= max_tokens:
            break
    return Run(
        ttft=first - start,
        decode_tps=(count - 1) / (last - first) if count > 1 and last > first else 0.0,
        total=last - start,
        tokens=count,
        tracked=tracked,
    )


def _load(model_path: Path, *, logits_all: bool) -> llama_cpp.Llama:
    """The same settings for every variant: only the logprobs path differs."""
    return llama_cpp.Llama(
        str(model_path),
        n_ctx=N_CTX,
        n_threads=THREADS,
        n_threads_batch=THREADS,
        logits_all=logits_all,
        verbose=False,
    )


class Raw:
    def __init__(self, model_path: Path) -> None:
        self.llama = _load(model_path, logits_all=False)
        meta = self.llama.metadata
        self.template = ChatTemplate(
            meta.get("tokenizer.chat_template"),
            bos_token="",
            eos_token=self.llama._model.token_get_text(self.llama.token_eos()),
        )
        self.vocab = self.llama._model.vocab
        self.n_vocab = self.llama.n_vocab()

    def chat_tokens(self, text: str) -> list[int]:
        prompt = self.template.render([ChatMessage("user", text)])
        tokens: list[int] = self.llama.tokenize(prompt.encode(), add_bos=False, special=True)
        return tokens

    def _tokens(self, prompt: list[int]) -> Iterator[int]:
        self.llama.reset()
        for token in self.llama.generate(prompt, temp=0.0, top_k=40, top_p=0.95, min_p=0.05):
            if llama_cpp.llama_vocab_is_eog(self.vocab, token):
                return
            yield token

    def plain(self, prompt: list[int], max_tokens: int) -> Run:
        return _timed_loop(self._tokens(prompt), max_tokens, lambda _: None)

    def with_logprobs(self, prompt: list[int], max_tokens: int, entropy: bool = False) -> Run:
        llama, n_vocab = self.llama, self.n_vocab
        shifted = np.empty(n_vocab, dtype=np.float32)
        weights = np.empty(n_vocab, dtype=np.float32)
        sink: list[tuple[float, float]] = []

        def track(token: int) -> None:
            row = np.ctypeslib.as_array(llama_cpp.llama_get_logits_ith(llama.ctx, -1), (n_vocab,))
            if entropy:
                normalizer, h = log_normalizer_and_entropy(row, shifted, weights)
            else:
                normalizer, h = log_normalizer(row, weights), 0.0
            sink.append((float(row[token]) - normalizer, h))

        return _timed_loop(self._tokens(prompt), max_tokens, track)


class LogitsAll:
    """llama-cpp-python's own logprobs path, for the reference ratio."""

    def __init__(self, model_path: Path) -> None:
        self.llama = _load(model_path, logits_all=True)

    def run(self, prompt: list[int], max_tokens: int) -> Run:
        self.llama.reset()
        start = time.perf_counter()
        first = last = start
        count = 0
        stream = self.llama.create_completion(
            prompt, max_tokens=max_tokens, temperature=0.0, logprobs=1, stream=True
        )
        for count, _ in enumerate(stream, 1):  # one chunk per token
            last = time.perf_counter()
            if count == 1:
                first = last
        return Run(
            first - start, (count - 1) / (last - first) if count > 1 else 0.0, last - start, count
        )


class Gateway:
    def __init__(self, stream_interval_ms: float) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
        env.update(
            GATEWAY_LOCAL__N_CTX=str(N_CTX),
            GATEWAY_LOCAL__N_THREADS=str(THREADS),
            GATEWAY_LOCAL__N_THREADS_BATCH=str(THREADS),
            # Raw evaluates every prompt from scratch; so does the gateway here.
            GATEWAY_LOCAL__PREFIX_CACHE="false",
            GATEWAY_LOCAL__STREAM_INTERVAL_MS=str(stream_interval_ms),
            # the ledger stays on (it is part of the gateway), out of the way
            GATEWAY_LEDGER__PATH=os.path.join(tempfile.mkdtemp(), "ledger.sqlite3"),
            # authentication on, as shipped
            GATEWAY_AUTH__KEYS=json.dumps([{"id": "bench", "hash": hash_key(API_KEY)}]),
        )
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "gateway.cli",
                "serve",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
            ],
            env=env,
            # its JSON access log (one line per request) is part of its cost, not of the report
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{self.port}",
            headers={"authorization": f"Bearer {API_KEY}"},
            timeout=300,
        )
        deadline = time.monotonic() + 120
        while True:
            try:
                if self.client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("gateway did not start")
            time.sleep(0.1)

    @staticmethod
    def _body(text: str, max_tokens: int, stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": "local",
            "messages": [{"role": "user", "content": text}],
            "max_tokens": max_tokens,
            "temperature": 0,
        }
        if stream:
            body.update(stream=True, stream_options={"include_usage": True})
        return body

    def whole(self, text: str, max_tokens: int) -> Run:
        """Non-streamed: only the total latency is visible to the client."""
        start = time.perf_counter()
        response = self.client.post(
            "/v1/chat/completions", json=self._body(text, max_tokens, False)
        )
        total = time.perf_counter() - start
        response.raise_for_status()
        return Run(0.0, 0.0, total, response.json()["usage"]["completion_tokens"])

    def run(self, text: str, max_tokens: int) -> tuple[Run, int]:
        body = self._body(text, max_tokens, True)
        start = time.perf_counter()
        first = last = 0.0
        tail = b""
        # A lean client: the harness shares the 2 cores with the model, so it
        # only looks for content bytes and parses nothing until the end.
        marker = b'"delta":{"content":"'
        with self.client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            for data in response.iter_raw():
                if marker in data:
                    last = time.perf_counter()
                    if not first:
                        first = last
                tail = (tail + data)[-4096:]
        events = [e for e in tail.split(b"\n\n") if e.startswith(b"data: {")]
        usage: dict[str, Any] = json.loads(events[-1][6:])["usage"]
        count = usage["completion_tokens"]
        run = Run(
            first - start, (count - 1) / (last - first) if count > 1 else 0.0, last - start, count
        )
        return run, usage["prompt_tokens"]

    def close(self) -> None:
        self.client.close()
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


def _fmt(series: Series, attr: str, scale: float = 1.0, unit: str = "") -> str:
    lo, hi = series.spread(attr)
    return f"{series.median(attr) * scale:8.2f}{unit} [{lo * scale:.2f}-{hi * scale:.2f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=128)
    parser.add_argument(
        "--stream-interval-ms",
        type=float,
        default=20.0,
        help="the gateway's GATEWAY_LOCAL__STREAM_INTERVAL_MS (measured beside 0)",
    )
    args = parser.parse_args()

    model_path = embedded_model_path()
    print(
        f"model: {model_path.name}; threads={THREADS}; n_ctx={N_CTX}; greedy; "
        f"max_tokens={args.max_tokens}; rounds={args.rounds} x {len(PROMPTS)} prompts"
    )
    print(
        f"machine: {platform.machine()}, {os.cpu_count()} CPUs, "
        f"{platform.python_implementation()} {platform.python_version()}, "
        f"llama-cpp-python {llama_cpp.__version__}"
    )

    raw = Raw(model_path)
    prompts = [raw.chat_tokens(p) for p in PROMPTS]
    intervals = sorted({0.0, args.stream_interval_ms})
    gateways = {ms: Gateway(ms) for ms in intervals}
    variants = ["raw", *(f"stream {ms:g} ms" for ms in intervals), "json"]
    series = {name: Series() for name in (*variants, *TRACKING, "logits_all")}
    default = gateways[args.stream_interval_ms]
    try:
        # warm-up: first decodes pay page faults and thread start-up
        raw.plain(prompts[0], 16)
        for gateway in gateways.values():
            gateway.run(PROMPTS[0], 16)
        for round_ in range(args.rounds):
            for i, (text, tokens) in enumerate(zip(PROMPTS, prompts, strict=True)):
                # rotate the order: whoever runs second in a pair runs a few % slower
                shift = (round_ + i) % len(variants)
                for which in variants[shift:] + variants[:shift]:
                    if which == "raw":
                        run = raw.plain(tokens, args.max_tokens)
                    elif which == "json":
                        run = default.whole(text, args.max_tokens)
                    else:
                        ms = float(which.split()[1])
                        run, prompt_tokens = gateways[ms].run(text, args.max_tokens)
                        assert prompt_tokens == len(tokens), (prompt_tokens, len(tokens))
                    series[which].runs.append(run)
                turn = (round_ + i) % len(TRACKING)
                for name in TRACKING[turn:] + TRACKING[:turn]:
                    if name == "plain":
                        run = raw.plain(tokens, args.max_tokens)
                    else:
                        run = raw.with_logprobs(tokens, args.max_tokens, name == "lse+entropy")
                    series[name].runs.append(run)
    finally:
        for gateway in gateways.values():
            gateway.close()
    raw.llama.close()

    reference = LogitsAll(model_path)
    reference.run(prompts[0], 16)
    for tokens in prompts:
        series["logits_all"].runs.append(reference.run(tokens, args.max_tokens))
    reference.llama.close()
    report(series, variants)


def _paired(a: Series, b: Series, attr: str) -> str:
    """Median [quartiles] of per-pair ratios a/b (same prompt, same round)."""
    ratios = sorted(
        getattr(x, attr) / getattr(y, attr) for x, y in zip(a.runs, b.runs, strict=True)
    )
    q = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else [ratios[0]] * 3
    return f"{statistics.median(ratios):.3f} [{q[0]:.3f}-{q[2]:.3f}]"


def _aggregate_tps(s: Series) -> float:
    return sum(r.tokens - 1 for r in s.runs) / sum((r.tokens - 1) / r.decode_tps for r in s.runs)


def report(series: dict[str, Series], variants: list[str]) -> None:
    raw_s = series["raw"]
    streams = [v for v in variants if v.startswith("stream")]
    print()
    print("1. gateway local route vs raw Llama.generate (median [min-max] over runs)")
    print(f"   {'':16} {'decode tok/s':>26} {'TTFT ms':>26} {'total s':>22}")
    for name in ["raw", *streams]:
        s = series[name]
        print(
            f"   {name:16} {_fmt(s, 'decode_tps'):>26} {_fmt(s, 'ttft', 1000):>26} "
            f"{_fmt(s, 'total'):>22}"
        )
    print(f"   {'json (no stream)':16} {'':>26} {'':>26} {_fmt(series['json'], 'total'):>22}")
    print(
        "   tokens generated: "
        + ", ".join(f"{v} {sum(r.tokens for r in series[v].runs)}" for v in variants)
    )
    print("   paired ratios gateway vs raw, median [quartiles]; target >= 0.95:")
    for name in streams:
        gw = series[name]
        print(
            f"   {name:16} decode tok/s {_paired(gw, raw_s, 'decode_tps')}"
            f" (all tokens {_aggregate_tps(gw) / _aggregate_tps(raw_s):.3f})"
            f"   TTFT {_paired(raw_s, gw, 'ttft')}   total {_paired(raw_s, gw, 'total')}"
        )
    print(f"   {'json (no stream)':16} total {_paired(raw_s, series['json'], 'total')}")
    plain, slow = series["plain"], series["logits_all"]
    print()
    print("2. per-token logprob tracking (in-process, decode tok/s, median [min-max])")
    for name in (*TRACKING, "logits_all"):
        print(f"   {name:12} {_fmt(series[name], 'decode_tps'):>26}")
    for name in TRACKING[1:]:
        runs = series[name].runs
        accounted = sum(r.tracked for r in runs) / sum(r.total - r.tracked for r in runs)
        print(
            f"   time ratio {name}/plain: {_paired(plain, series[name], 'decode_tps')}"
            f" (A/B, noisy)   accounted: {1 + accounted:.4f}   (target <= 1.03)"
        )
    print(
        f"   time ratio logits_all/plain: "
        f"{_aggregate_tps(plain) / _aggregate_tps(slow):.3f}  (all tokens)"
    )


if __name__ == "__main__":
    main()
