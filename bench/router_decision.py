"""Router decisions: what Policy.decide and GatePolicy.judge cost per request.

For each shipped policy (deploy/policies/*.yaml), in one run:

* decide   ``Policy.decide`` on a realistic mix of requests: short and long
           prompts, single- and multi-turn, with and without personal data
           (each call gets a fresh RequestFacts, so joining the conversation
           text is paid every time, as in the gateway)
* judge    ``GatePolicy.judge`` on 64-token log-probability lists

against two baselines measured the same way in the same run:

* no-op    an empty function called with the same RequestFacts
* lookup   ``Policy.resolve``: the model-id lookup alone

Each figure is the median over several repeats of the mean time per call.

Usage: python bench/router_decision.py [--repeats 7] [--budget-ms 15]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TypeVar

from router import GatePolicy, Message, Policy, PromptSize, RequestFacts, load_policy

POLICIES = Path(__file__).resolve().parents[1] / "deploy" / "policies"
T = TypeVar("T")

PARAGRAPH = (
    "The quarterly report covers revenue, operating costs and the outlook for the "
    "next two quarters. Sales in the northern region grew faster than expected, "
    "while logistics costs rose because of fuel prices and a shortage of drivers. "
    "The team proposes to renegotiate the freight contracts and to move part of the "
    "inventory closer to the customers who order most often. "
)
SYSTEM = "You are a helpful assistant. Answer briefly and politely."


def _request(text: str, *, history: int = 0, system: str = SYSTEM, tokens: int) -> RequestFacts:
    turns: list[Message] = [Message("system", system)]
    for i in range(history):
        turns.append(Message("user", f"Question {i}: {PARAGRAPH[: 120 + i]}"))
        turns.append(Message("assistant", f"Answer {i}: {PARAGRAPH[40 : 200 + i]}"))
    turns.append(Message("user", text))
    return RequestFacts(
        model="hybrid",
        messages=tuple(turns),
        prompt=PromptSize.counted(tokens),
        max_tokens=256,
        local_wait_seconds=0.2,
        cloud_configured=True,
    )


def request_mix() -> dict[str, RequestFacts]:
    long_text = PARAGRAPH * 20  # about 7,000 characters, 1,400 tokens
    return {
        "short": _request("What is the capital of France?", tokens=30),
        "short, email": _request("Write to jane.doe@example.com about the invoice", tokens=35),
        "short, reasoning": _request("Solve 3x + 5 = 20 step by step", tokens=32),
        "multi-turn (8 messages)": _request("And what about next year?", history=3, tokens=420),
        "long (7 kB)": _request(f"Summarise this:\n{long_text}", tokens=1420),
        "long, phone at end": _request(
            f"Summarise this:\n{long_text}\nCall me on +44 20 7946 0958", tokens=1440
        ),
    }


def logprob_lists(count: int, length: int = 64) -> list[list[float]]:
    rng = random.Random(1)
    # Mostly confident tokens with a few unsure ones, as a small model writes.
    return [
        [
            -rng.expovariate(4.0) if rng.random() < 0.9 else -rng.expovariate(0.4)
            for _ in range(length)
        ]
        for _ in range(count)
    ]


def per_call_us(
    function: Callable[[T], object],
    make_inputs: Callable[[int], Sequence[T]],
    repeats: int,
    budget: float,
) -> float:
    """Median over repeats of the mean microseconds per call; each repeat makes
    as many calls as fit in about ``budget`` seconds."""
    probe = make_inputs(1)
    start = time.perf_counter()
    function(probe[0])
    calls = max(20, min(20_000, int(budget / max(time.perf_counter() - start, 1e-7))))
    samples = []
    for _ in range(repeats):
        inputs = make_inputs(calls)
        start_ns = time.perf_counter_ns()
        for item in inputs:
            function(item)
        samples.append((time.perf_counter_ns() - start_ns) / len(inputs) / 1000)
    return statistics.median(samples)


def noop(item: object) -> None:
    pass


def fresh(facts: RequestFacts) -> Callable[[int], list[RequestFacts]]:
    # dataclasses.replace drops the cached conversation text, as a new request would.
    return lambda calls: [dataclasses.replace(facts) for _ in range(calls)]


def row(label: str, cost: float, lookup: float | None, noop_cost: float, note: str = "") -> None:
    vs_lookup = f"x{cost / lookup:8.1f}" if lookup is not None else " " * 9
    print(f"  {label:30} {cost:9.2f} {vs_lookup} x{cost / noop_cost:9.1f}  {note}")


def bench_policy(policy: Policy, lists: list[list[float]], repeats: int, budget: float) -> None:
    mix = request_mix()
    first = next(iter(mix.values()))
    base_noop = per_call_us(noop, fresh(first), repeats, budget)

    def lookup(facts: RequestFacts) -> object:
        return policy.resolve(facts.model, cloud_configured=facts.cloud_configured)

    base_lookup = per_call_us(lookup, fresh(first), repeats, budget)
    print(f"  {'':30} {'us/call':>9} {'/lookup':>9} {'/no-op':>10}")
    row("baseline: no-op call", base_noop, None, base_noop)
    row("baseline: model-id lookup", base_lookup, base_lookup, base_noop)
    for kind, facts in mix.items():
        decision = policy.decide(facts)
        assert decision is not None
        cost = per_call_us(policy.decide, fresh(facts), repeats, budget)
        row(
            f"decide: {kind}", cost, base_lookup, base_noop, f"{decision.route} ({decision.reason})"
        )
    cost = per_call_us(policy.gate.judge, lambda n: lists[:n], repeats, budget)
    row(f"judge: 64 tokens, {policy.gate.signal}", cost, base_lookup, base_noop)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--budget-ms", type=float, default=15.0, help="time per repeat")
    args = parser.parse_args()
    budget = args.budget_ms / 1000
    lists = logprob_lists(20_000)
    print(
        f"CPython {platform.python_version()} on {platform.machine()}; "
        f"median of {args.repeats} repeats of ~{args.budget_ms:g} ms each\n"
    )
    for path in sorted(POLICIES.glob("*.yaml")):
        policy = load_policy(path)
        privacy = policy.privacy
        detectors = len(privacy.detectors) + len(privacy.keywords) + len(privacy.patterns)
        print(f"{path.name} ({len(policy.rules)} rules, {detectors} privacy detectors)")
        bench_policy(policy, lists, args.repeats, budget)
        print()
    print("GatePolicy.judge, every signal, 64 tokens")
    base = per_call_us(noop, lambda n: lists[:n], args.repeats, budget)
    print(f"  {'':30} {'us/call':>9} {'':9} {'/no-op':>10}")
    row("baseline: no-op call", base, None, base)
    logistic = {"intercept": 1.0, "weights": {"min": 0.4, "mean": 1.0, "length": -0.01}}
    for signal in ("min", "mean", "quantile", "first_k_min", "logistic"):
        extra = {"threshold": 0.5, "logistic": logistic} if signal == "logistic" else {}
        gate = GatePolicy.model_validate({"signal": signal, **extra})
        row(
            f"judge: {signal}",
            per_call_us(gate.judge, lambda n: lists[:n], args.repeats, budget),
            None,
            base,
        )


if __name__ == "__main__":
    sys.exit(main())
