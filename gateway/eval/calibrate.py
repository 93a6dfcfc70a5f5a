"""``hybrid-gateway calibrate``: fit the gate on one split, measure it on the other.

The items are split deterministically (:func:`gateway.eval.split.split`) into
a calibration split and a held-out split. On the calibration split only:

- the logistic model over the gate's features (mean, min, quantile,
  first_k_min of the answer's log-probabilities, its length, the prompt's
  length and, when the answers carry them, the summaries of the tokens'
  entropies; or the chosen subset) is fitted when the signal is ``logistic``;
- the threshold is chosen for the target: a cloud share (the share of items
  whose score is lowest escalate), or a PGR (the smallest cloud share whose
  first crossing of that PGR on the calibration curve, then the threshold
  that escalates that share).

Every reported metric is computed on the held-out split only, by a gate that
never saw those items: AUROC and deferral curves of the fitted gate against
each single signal, the length-only router, random and oracle; and at the
fitted threshold, the realised cloud share, accuracy, PGR, cost and latency.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, get_args

from gateway.eval.answering import Answered
from gateway.eval.costs import Prices
from gateway.eval.run import RunInfo, header, per_item, route_shares
from gateway.eval.scoring import (
    Outcome,
    available_signals,
    curves,
    fit,
    logistic_scores,
    outcomes,
    pre_generation_routes,
    qualities,
    raw_scores,
    routings,
    safe_auroc,
    summarise,
)
from gateway.eval.split import split
from router import GatePolicy, LogisticGate, Policy
from router.calibration import cpt, deferral_curve, threshold_for_cloud_share
from router.gate import ENTROPY_FEATURES, Feature, Signal

CALIBRATED = "calibrated"
#: every feature a logistic gate may weigh
FEATURES: tuple[str, ...] = get_args(Feature)


class CalibrationError(ValueError):
    """The calibration split cannot support the requested fit."""


@dataclass(frozen=True)
class Target:
    kind: Literal["cloud_share", "pgr"]
    value: float

    def __post_init__(self) -> None:
        if not 0.0 <= self.value <= 1.0:
            raise ValueError(f"the target must be in [0, 1], got {self.value}")

    def describe(self) -> str:
        return (
            f"cloud share {self.value:g}" if self.kind == "cloud_share" else f"PGR {self.value:g}"
        )


@dataclass(frozen=True)
class FittedGate:
    gate: GatePolicy
    #: the cloud share the threshold was chosen for, on the calibration split
    share: float
    #: a logistic model fitted on the calibration split (also when the signal is another)
    logistic: LogisticGate | None


def _scores(rows: Sequence[Outcome], signal: Signal, model: LogisticGate | None) -> list[float]:
    if signal == "logistic":
        assert model is not None
        return logistic_scores(model, rows)
    return [row.features[signal] for row in rows]


def _threshold(scores: Sequence[float], share: float, signal: Signal) -> float:
    """The gate threshold for ``share``, inside the signal's valid range.

    An empty answer scores -inf (0 for logistic) and escalates whatever the
    threshold, so a threshold of -inf is replaced by the lowest finite score:
    the same items escalate, and YAML gets a number.
    """
    threshold = threshold_for_cloud_share(scores, share)
    if not math.isfinite(threshold):
        usable = [s for s in scores if math.isfinite(s)]
        threshold = min(usable) if usable else 0.0
    if signal == "logistic":
        return min(max(threshold, 0.0), 1.0)
    # Log-probabilities are <= 0; "just above the highest" may round to a positive value.
    return min(threshold, 0.0)


def _check_features(
    rows: Sequence[Outcome], signal: Signal, features: Sequence[str] | None
) -> None:
    unknown = sorted(set(features or ()) - set(FEATURES))
    if unknown:
        raise CalibrationError(f"unknown features {unknown}; choose from {', '.join(FEATURES)}")
    wanted = {signal} | set(features or ())
    if not ENTROPY_FEATURES.isdisjoint(wanted) and any(row.entropies is None for row in rows):
        raise CalibrationError(
            "entropy signals need the tokens' entropies, and some cached answers have none "
            "(answered by an engine that does not report them)"
        )


def fit_gate(
    rows: Sequence[Outcome],
    base: GatePolicy,
    signal: Signal,
    target: Target,
    features: Sequence[str] | None = None,
) -> FittedGate:
    """The gate fitted on ``rows`` (the calibration split) for ``target``; a logistic
    model over ``features`` (default: every feature the answers support)."""
    if not rows:
        raise CalibrationError("the calibration split is empty")
    _check_features(rows, signal, features)
    model = fit(rows, features)
    if signal == "logistic" and model is None:
        raise CalibrationError(
            "cannot fit the logistic signal: the calibration split's local answers are all "
            "right or all wrong (or all empty); use more items or a single signal"
        )
    scores = _scores(rows, signal, model)
    if target.kind == "cloud_share":
        share = target.value
    else:
        local, cloud = qualities(rows)
        r_local, r_cloud = sum(local) / len(local), sum(cloud) / len(cloud)
        if r_cloud <= r_local:
            raise CalibrationError(
                "a PGR target needs the cloud to beat the local model on the calibration split "
                f"(local {r_local:.3f}, cloud {r_cloud:.3f})"
            )
        reached = cpt(deferral_curve(local, cloud, scores), r_local, r_cloud, target.value)
        share = 1.0 if reached is None else reached
    threshold = _threshold(scores, share, signal)
    data = base.model_dump()
    data.update(signal=signal, threshold=threshold)
    if signal == "logistic" and model is not None:
        data["logistic"] = model.model_dump()
    return FittedGate(GatePolicy.model_validate(data), share, model)


def _side(rows: Sequence[Outcome], gate: GatePolicy) -> dict[str, Any]:
    escalated = sum(1 for row in rows if row.escalated_by(gate))
    return {
        "items": len(rows),
        "local_accuracy": sum(row.local_correct for row in rows) / len(rows),
        "cloud_share_at_threshold": escalated / len(rows),
    }


def calibrate(
    answered: Sequence[Answered],
    policy: Policy,
    prices: Prices,
    info: RunInfo,
    *,
    signal: Signal,
    target: Target,
    fraction: float,
    features: Sequence[str] | None = None,
) -> tuple[dict[str, Any], GatePolicy]:
    """Fit on the calibration split, measure on the held-out split; the logistic
    model over ``features`` (default: every feature the answers support).

    Returns the JSON-ready result and the fitted gate.
    """
    items = [a.item for a in answered]
    fit_items, held_items = split(items, fraction=fraction, seed=info.seed)
    fit_ids = {item.id for item in fit_items}
    all_rows = outcomes(answered, policy.gate)
    fit_rows = [row for row in all_rows if row.answered.item.id in fit_ids]
    held = [row for row in all_rows if row.answered.item.id not in fit_ids]
    fitted = fit_gate(fit_rows, policy.gate, signal, target, features)
    gate = fitted.gate

    labels = [row.local_correct for row in held]
    confidences: dict[str, list[float]] = {CALIBRATED: [row.score(gate) for row in held]}
    confidences.update(raw_scores(held))
    if fitted.logistic is not None:
        confidences["logistic"] = logistic_scores(fitted.logistic, held)
    summary = summarise(curves(held, confidences), held)
    routes = pre_generation_routes(held, policy, max_tokens=info.max_tokens)
    routing = routings(held, gate, routes, prices)

    result = header(info, held)
    result["notes"].append(
        f"every metric is on the {len(held)} held-out items only; the gate was fitted on the "
        f"other {len(fit_rows)}"
    )
    own = summary[CALIBRATED]["apgr"]
    local, cloud = qualities(held)
    r_local, r_cloud = sum(local) / len(local), sum(cloud) / len(cloud)
    accuracy = routing["gate"]["accuracy"]
    result.update(
        {
            "split": {
                "calibration_fraction": fraction,
                "seed": info.seed,
                "calibration": _side(fit_rows, gate),
                "held_out": _side(held, gate),
                "held_out_ids": [row.answered.item.id for row in held],
            },
            "target": {"kind": target.kind, "value": target.value},
            "fitted": {
                "signal": gate.signal,
                "threshold": gate.threshold,
                "calibration_cloud_share": fitted.share,
                "logistic": None if gate.logistic is None else gate.logistic.model_dump(),
                # what the logistic model (the gate's, or the one reported beside it) weighs
                "features": None if fitted.logistic is None else list(fitted.logistic.weights),
            },
            "auroc": {name: safe_auroc(values, labels) for name, values in confidences.items()},
            "curves": summary,
            "beats": {
                name: None
                if own is None or summary[name]["apgr"] is None
                else own > summary[name]["apgr"]
                for name in (*available_signals(held), "length")
                if name != gate.signal
            },
            "at_threshold": {
                "cloud_share": routing["gate"]["share"]["local->cloud"],
                "accuracy": accuracy,
                "pgr": None if r_cloud == r_local else (accuracy - r_local) / (r_cloud - r_local),
            },
            "rules": route_shares(routes),
            "routing": routing,
            "per_item": per_item(held, confidences[CALIBRATED]),
        }
    )
    return result, gate
