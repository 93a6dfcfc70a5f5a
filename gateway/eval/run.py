"""``hybrid-gateway eval``: how well does a policy's gate route this dataset?

Each item is answered by the local model (greedy: temperature 0, so a rerun
reproduces the answers) and, when a cloud is configured, by the cloud with the
same settings; with no cloud the gold answer stands in (the cloud is then
right on every item, and every output says so). From the checked answers:
accuracy of each side, AUROC of every confidence signal, deferral curves
(the policy's gate, each signal, length-only, random, oracle) with APGR,
normalised gain, CPT(50%), CPT(80%) and area, and the accuracy, cost and
latency of all-local, all-cloud, the gate and the whole policy at the
policy's threshold.

The logistic signal is cross-fitted: every item is scored by a model fitted on
the other folds only. To fit a gate and measure it honestly, use
``hybrid-gateway calibrate`` (:mod:`gateway.eval.calibrate`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gateway.eval.answering import Answered
from gateway.eval.costs import Prices
from gateway.eval.scoring import (
    SINGLE_SIGNALS,
    Outcome,
    available_signals,
    cross_fitted_scores,
    curves,
    outcomes,
    pre_generation_routes,
    raw_scores,
    routings,
    safe_auroc,
    summarise,
)
from router import Policy

CLOUD_STAND_IN = (
    "NO CLOUD CALLS: the gold answer stands in for the cloud (cloud correct on every item)"
)
LOGISTIC_NOTE = (
    "logistic cross-fitted: each item scored by a model fitted on the other 4 of 5 folds"
)
GREEDY_NOTE = "both sides decoded greedily (temperature 0)"
#: every signal an eval can report (the entropy ones when the answers carry entropies)
SIGNALS = (*SINGLE_SIGNALS, "logistic")
CURVES = ("policy", *SIGNALS, "length", "random", "oracle")
#: the curves drawn in the PNG (the signals' curves are in the JSON)
PLOTTED = ("policy", "length", "random", "oracle")
FOLDS = 5


@dataclass(frozen=True)
class RunInfo:
    """What produced a result, echoed into it."""

    dataset: str
    model: str
    max_tokens: int
    seed: int
    #: "MODEL at BASE_URL", or None for the gold stand-in
    cloud: str | None


def cloud_note(cloud: str | None) -> str:
    return CLOUD_STAND_IN if cloud is None else f"cloud answers from {cloud}"


def header(info: RunInfo, rows: Sequence[Outcome]) -> dict[str, Any]:
    """The fields every result starts with: provenance, notes, the two accuracies."""
    n = len(rows)
    return {
        "dataset": info.dataset,
        "model": info.model,
        "max_tokens": info.max_tokens,
        "seed": info.seed,
        "cloud": info.cloud,
        "cloud_is_gold_stand_in": info.cloud is None,
        "notes": [cloud_note(info.cloud), GREEDY_NOTE],
        "items": n,
        "local_accuracy": sum(row.local_correct for row in rows) / n,
        "cloud_accuracy": sum(row.cloud_correct for row in rows) / n,
    }


def per_item(rows: Sequence[Outcome], confidences: Sequence[float]) -> list[dict[str, Any]]:
    return [
        {
            "id": row.answered.item.id,
            "local_correct": row.local_correct,
            "cloud_correct": row.cloud_correct,
            "answer": row.answered.local.text,
            "cloud_answer": None if row.answered.cloud is None else row.answered.cloud.text,
            "tokens": len(row.logprobs),
            "prompt_tokens": row.answered.local.prompt_tokens,
            "local_seconds": row.answered.local.seconds,
            "confidence": _finite(confidence),
        }
        for row, confidence in zip(rows, confidences, strict=True)
    ]


def _finite(value: float | None) -> float | None:
    """JSON has no infinities: an unbounded value is written as null."""
    return value if value is not None and math.isfinite(value) else None


def route_shares(routes: Sequence[str]) -> dict[str, float]:
    return {
        route: sum(1 for r in routes if r == route) / len(routes)
        for route in ("local", "cloud", "local_then_check")
    }


def evaluate(
    answered: Sequence[Answered], policy: Policy, prices: Prices, info: RunInfo
) -> dict[str, Any]:
    """Every number of the eval report, as a JSON-ready dict."""
    if not answered:
        raise ValueError("no items to evaluate")
    gate = policy.gate
    rows = outcomes(answered, gate)
    labels = [row.local_correct for row in rows]
    confidences: dict[str, list[float]] = {"policy": [row.score(gate) for row in rows]}
    confidences.update(raw_scores(rows))
    logistic = cross_fitted_scores(rows, k=FOLDS, seed=info.seed)
    if logistic is not None:
        confidences["logistic"] = logistic
    routes = pre_generation_routes(rows, policy, max_tokens=info.max_tokens)
    escalated = sum(1 for row in rows if row.escalated_by(gate))
    result = header(info, rows)
    result["notes"].append(LOGISTIC_NOTE)
    result.update(
        {
            "auroc": {
                name: safe_auroc(confidences[name], labels) if name in confidences else None
                for name in ("policy", *available_signals(rows), "logistic")
            },
            "gate": {
                "signal": gate.signal,
                "threshold": gate.threshold,
                "cloud_share_at_threshold": escalated / len(rows),
            },
            "curves": summarise(curves(rows, confidences), rows),
            "rules": route_shares(routes),
            "routing": routings(rows, gate, routes, prices),
            "per_item": per_item(rows, confidences["policy"]),
        }
    )
    return result


@dataclass(frozen=True)
class Outputs:
    result: dict[str, Any]
    json_path: Path
    png_path: Path


def write_outputs(
    result: dict[str, Any], out: Path, stem: str, *, plotted: tuple[str, ...], title: str
) -> Outputs:
    """``<stem>.json`` and ``<stem>.png`` (the ``plotted`` deferral curves) in ``out``."""
    from gateway.eval.report import plot_curves

    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / f"{stem}.json", out / f"{stem}.png"
    json_path.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n", encoding="utf-8")
    plot_curves(result, png_path, names=plotted, title=title)
    return Outputs(result=result, json_path=json_path, png_path=png_path)
