"""``hybrid-gateway eval``: run a dataset through the local model and calibrate the gate.

Each item is answered once by the local model (greedy: temperature 0, so a
rerun reproduces the same answers), checked against its gold answers, and
scored by every confidence signal. From those: AUROC per signal, deferral
curves (policy gate, length-only, random, oracle), APGR, CPT(50%) and CPT(80%),
and the gate threshold that sends CPT(80%)'s share of items to the cloud.

Limits of this first version, repeated in every output:

- no cloud calls: the gold answer stands in for the cloud, so the cloud is
  right on every item and the curves show the gap to a perfect model;
- the logistic signal is fitted and scored on the same items (no held-out
  split), so its AUROC is optimistic.

Answers are cached in ``cache.jsonl`` (one JSON line per item, keyed by item
id, model and max tokens), so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from gateway.eval.answers import check
from gateway.eval.dataset import EvalItem
from router import Policy, confidence_signals
from router.calibration import (
    DeferralPoint,
    apgr,
    auroc,
    cpt,
    curve_auc,
    deferral_curve,
    fit_logistic,
    oracle_curve,
    random_curve,
    threshold_for_cloud_share,
)

CLOUD_STAND_IN = (
    "NO CLOUD CALLS: the gold answer stands in for the cloud (cloud correct on every item)"
)
LOGISTIC_NOTE = "logistic fitted and scored on the same items (no held-out split yet)"
SIGNALS = ("mean", "min", "quantile", "first_k_min", "logistic")
CURVES = ("policy", "length", "random", "oracle")
#: random tie-breaking seed for the length-only curve (prompt lengths tie often)
_SEED = 0


@dataclass(frozen=True)
class LocalAnswer:
    """What the local model said for one item."""

    text: str
    #: natural-log probability of each generated token
    logprobs: tuple[float, ...]
    prompt_tokens: int


Generate = Callable[[EvalItem], LocalAnswer]


@dataclass(frozen=True)
class Scored:
    item: EvalItem
    answer: LocalAnswer
    correct: bool


def _cache_key(item_id: str, model: str, max_tokens: int) -> str:
    return json.dumps([item_id, model, max_tokens])


def _read_cache(path: Path) -> dict[str, LocalAnswer]:
    cached: dict[str, LocalAnswer] = {}
    if not path.is_file():
        return cached
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            row = json.loads(line)
            key = _cache_key(row["id"], row["model"], row["max_tokens"])
            cached[key] = LocalAnswer(
                text=row["text"],
                logprobs=tuple(float(x) for x in row["logprobs"]),
                prompt_tokens=int(row["prompt_tokens"]),
            )
        except (ValueError, KeyError, TypeError):
            # A run killed mid-write leaves a torn last line: that item is simply redone.
            continue
    return cached


def answer_all(
    items: Sequence[EvalItem],
    generate: Generate,
    *,
    cache: Path,
    model: str,
    max_tokens: int,
    progress: TextIO | None = None,
) -> list[LocalAnswer]:
    """Every item's local answer, from the cache when present, else generated and cached."""
    cached = _read_cache(cache)
    answers: list[LocalAnswer] = []
    cache.parent.mkdir(parents=True, exist_ok=True)
    with cache.open("a", encoding="utf-8") as sink:
        for k, item in enumerate(items, start=1):
            if progress is not None:
                progress.write(f"\ritem {k}/{len(items)}")
                progress.flush()
            key = _cache_key(item.id, model, max_tokens)
            answer = cached.get(key)
            if answer is None:
                answer = generate(item)
                row = {
                    "id": item.id,
                    "model": model,
                    "max_tokens": max_tokens,
                    "text": answer.text,
                    "logprobs": list(answer.logprobs),
                    "prompt_tokens": answer.prompt_tokens,
                }
                sink.write(json.dumps(row) + "\n")
                sink.flush()
                cached[key] = answer
            answers.append(answer)
    if progress is not None:
        progress.write("\n")
    return answers


def _finite(value: float | None) -> float | None:
    """JSON has no infinities: an unbounded threshold is written as null."""
    return value if value is not None and math.isfinite(value) else None


def _auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    try:
        return auroc(scores, labels)
    except ValueError:  # one class only: undefined
        return None


def _points(curve: Iterable[DeferralPoint]) -> list[list[float]]:
    return [[point.cloud_share, point.quality] for point in curve]


def evaluate(
    items: Sequence[EvalItem], answers: Sequence[LocalAnswer], policy: Policy
) -> dict[str, Any]:
    """Every number of the report, as a JSON-ready dict."""
    gate = policy.gate
    scored = [
        Scored(item, answer, check(answer.text, item.answers, item.match))
        for item, answer in zip(items, answers, strict=True)
    ]
    labels = [s.correct for s in scored]
    local = [1.0 if s.correct else 0.0 for s in scored]
    cloud = [1.0] * len(scored)  # the gold stand-in
    r_local, r_cloud = math.fsum(local) / len(local), math.fsum(cloud) / len(cloud)
    features = [
        confidence_signals(s.answer.logprobs, quantile=gate.quantile, first_k=gate.first_k)
        for s in scored
    ]

    signals: dict[str, list[float]] = {
        name: [f[name] for f in features] for name in ("mean", "min", "quantile", "first_k_min")
    }
    # Empty answers (-inf features) carry no ranking information: fit without them,
    # and score them 0 (the gate escalates them anyway).
    fit_rows = [i for i, f in enumerate(features) if all(math.isfinite(v) for v in f.values())]
    logistic: dict[str, Any] | None = None
    try:
        fitted = fit_logistic([features[i] for i in fit_rows], [labels[i] for i in fit_rows])
    except ValueError:
        fitted = None
    if fitted is not None:
        fitted_rows = set(fit_rows)
        signals["logistic"] = [
            fitted.probability(f) if i in fitted_rows else 0.0 for i, f in enumerate(features)
        ]
        logistic = {"intercept": fitted.intercept, "weights": dict(fitted.weights)}

    policy_confidence = [gate.score(s.answer.logprobs) for s in scored]
    order = list(range(len(scored)))
    random.Random(_SEED).shuffle(order)
    # Longest prompts first to the cloud; a seeded shuffle breaks length ties fairly.
    shuffled = [scored[i] for i in order]
    length_curve = deferral_curve(
        [local[i] for i in order],
        [cloud[i] for i in order],
        [-float(s.answer.prompt_tokens) for s in shuffled],
    )
    curves = {
        "policy": deferral_curve(local, cloud, policy_confidence),
        "length": length_curve,
        "random": random_curve(local, cloud),
        "oracle": oracle_curve(local, cloud),
    }
    gap = r_cloud > r_local
    summary: dict[str, dict[str, float | None]] = {}
    for name, curve in curves.items():
        summary[name] = {
            "apgr": apgr(curve, r_local, r_cloud) if gap else None,
            "cpt50": cpt(curve, r_local, r_cloud, 0.5) if gap else None,
            "cpt80": cpt(curve, r_local, r_cloud, 0.8) if gap else None,
            "auc": curve_auc(curve),
        }
    share80 = summary["policy"]["cpt80"]
    threshold = (
        threshold_for_cloud_share(policy_confidence, share80) if share80 is not None else None
    )
    escalated = sum(1 for s in scored if gate.judge(s.answer.logprobs).escalate)
    return {
        "notes": [CLOUD_STAND_IN, LOGISTIC_NOTE, "local model decoded greedily (temperature 0)"],
        "items": len(scored),
        "local_accuracy": r_local,
        "cloud_accuracy": r_cloud,
        "cloud_is_gold_stand_in": True,
        "auroc": {
            name: _auroc(signals[name], labels) if name in signals else None for name in SIGNALS
        },
        "logistic": logistic,
        "gate": {
            "signal": gate.signal,
            "threshold": gate.threshold,
            "cloud_share_at_threshold": escalated / len(scored),
        },
        "curves": {name: {**summary[name], "points": _points(c)} for name, c in curves.items()},
        "calibration": {
            "target": "cpt80",
            "cloud_share": share80,
            "signal": gate.signal,
            "threshold": _finite(threshold),
        },
        "per_item": [
            {
                "id": s.item.id,
                "correct": s.correct,
                "answer": s.answer.text,
                "tokens": len(s.answer.logprobs),
                "prompt_tokens": s.answer.prompt_tokens,
                "confidence": _finite(c),
            }
            for s, c in zip(scored, policy_confidence, strict=True)
        ],
    }


@dataclass(frozen=True)
class Outputs:
    result: dict[str, Any]
    json_path: Path
    png_path: Path


def run_eval(
    items: Sequence[EvalItem],
    policy: Policy,
    generate: Generate,
    *,
    out: Path,
    model: str,
    max_tokens: int,
    progress: TextIO | None = None,
) -> Outputs:
    """Answer (or read from cache), evaluate, and write eval.json and deferral.png in ``out``."""
    from gateway.eval.report import plot_curves

    answers = answer_all(
        items,
        generate,
        cache=out / "cache.jsonl",
        model=model,
        max_tokens=max_tokens,
        progress=progress,
    )
    result = evaluate(items, answers, policy)
    result["model"] = model
    result["max_tokens"] = max_tokens
    json_path, png_path = out / "eval.json", out / "deferral.png"
    json_path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    plot_curves(result, png_path)
    return Outputs(result=result, json_path=json_path, png_path=png_path)
