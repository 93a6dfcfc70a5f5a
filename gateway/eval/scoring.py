"""From answers to numbers: correctness, confidence signals, curves and their summaries.

Pure functions over :class:`Outcome` lists; ``eval`` (:mod:`gateway.eval.run`)
applies them to every item, ``calibrate`` (:mod:`gateway.eval.calibrate`) to
the held-out split only.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, get_args

from gateway.eval.answering import Answered
from gateway.eval.answers import check
from gateway.eval.costs import Prices, Way, routing_summary
from gateway.eval.split import folds
from router import (
    GatePolicy,
    LogisticGate,
    Message,
    Policy,
    PromptSize,
    RequestFacts,
    confidence_signals,
)
from router.calibration import (
    DeferralPoint,
    apgr,
    auroc,
    cpt,
    curve_auc,
    deferral_curve,
    fit_logistic,
    normalised_gain,
    oracle_curve,
    random_curve,
)
from router.gate import EntropySignal

#: signals computed from the answer's log-probabilities alone, needing no fit
RAW_SIGNALS = ("mean", "min", "quantile", "first_k_min")
#: signals computed from the answer's token entropies, when the engine reported them
ENTROPY_SIGNALS: tuple[str, ...] = get_args(EntropySignal)
#: every fit-free signal, in report order
SINGLE_SIGNALS = (*RAW_SIGNALS, *ENTROPY_SIGNALS)
#: seed of the tie-breaking shuffle for the length-only router (prompt lengths tie often)
LENGTH_SEED = 0


@dataclass(frozen=True)
class Outcome:
    answered: Answered
    local_correct: bool
    #: the gold stand-in is always right
    cloud_correct: bool
    #: every gate feature of the local answer (router.gate.confidence_signals)
    features: dict[str, float]

    @property
    def logprobs(self) -> tuple[float, ...]:
        return self.answered.local.logprobs

    @property
    def prompt_tokens(self) -> int:
        return self.answered.local.prompt_tokens

    @property
    def entropies(self) -> tuple[float, ...] | None:
        return self.answered.local.entropies

    def score(self, gate: GatePolicy) -> float:
        """This gate's confidence in the local answer, from everything the gateway
        would pass it (log-probabilities, prompt length, entropies)."""
        return gate.score(self.logprobs, prompt_tokens=self.prompt_tokens, entropies=self.entropies)

    def escalated_by(self, gate: GatePolicy) -> bool:
        """Whether this gate sends the local answer on to the cloud."""
        verdict = gate.judge(
            self.logprobs, prompt_tokens=self.prompt_tokens, entropies=self.entropies
        )
        return verdict.escalate


def outcomes(answered: Sequence[Answered], gate: GatePolicy) -> list[Outcome]:
    """Check every answer; score the local one with the gate's features."""
    result = []
    for a in answered:
        item = a.item
        result.append(
            Outcome(
                answered=a,
                local_correct=check(a.local.text, item.answers, item.match),
                cloud_correct=True
                if a.cloud is None
                else check(a.cloud.text, item.answers, item.match),
                features=confidence_signals(
                    a.local.logprobs,
                    quantile=gate.quantile,
                    first_k=gate.first_k,
                    prompt_tokens=a.local.prompt_tokens,
                    entropies=a.local.entropies,
                ),
            )
        )
    return result


def finite(features: Mapping[str, float]) -> bool:
    return all(math.isfinite(value) for value in features.values())


def available_signals(rows: Sequence[Outcome]) -> tuple[str, ...]:
    """The fit-free signals every row has: the entropy ones only when every answer
    came with its tokens' entropies."""
    return tuple(name for name in SINGLE_SIGNALS if all(name in row.features for row in rows))


def raw_scores(rows: Sequence[Outcome]) -> dict[str, list[float]]:
    """Every fit-free signal of every item (-inf for an empty answer)."""
    return {name: [row.features[name] for row in rows] for name in available_signals(rows)}


def _chosen(features: Mapping[str, float], names: Sequence[str] | None) -> dict[str, float]:
    return dict(features) if names is None else {name: features[name] for name in names}


def logistic_scores(model: LogisticGate, rows: Sequence[Outcome]) -> list[float]:
    """P(right) per item; an empty answer scores 0, as the gate scores it."""
    used = list(model.weights)
    return [
        model.probability(row.features) if finite(_chosen(row.features, used)) else 0.0
        for row in rows
    ]


def fit(rows: Sequence[Outcome], features: Sequence[str] | None = None) -> LogisticGate | None:
    """The logistic model over these rows' finite features (``features`` only, when
    given; every feature the rows have otherwise); None when it cannot be fitted (no
    rows, or only one class among them). A named feature a row lacks is a KeyError."""
    chosen = [_chosen(row.features, features) for row in rows]
    usable = [(row, values) for row, values in zip(rows, chosen, strict=True) if finite(values)]
    labels = [row.local_correct for row, _ in usable]
    if not usable or all(labels) or not any(labels):
        return None
    return fit_logistic([values for _, values in usable], labels)


def cross_fitted_scores(
    rows: Sequence[Outcome],
    *,
    k: int = 5,
    seed: int = 0,
    features: Sequence[str] | None = None,
) -> list[float] | None:
    """Out-of-fold logistic probabilities: each item is scored by a model fitted
    on the other folds only, so no item is scored by a fit that saw it.
    None when some fold's training rows cannot be fitted."""
    if len(rows) < k:
        return None
    assignment = folds([row.answered.item for row in rows], k=k, seed=seed)
    scores = [0.0] * len(rows)
    for fold in range(k):
        model = fit([row for row, f in zip(rows, assignment, strict=True) if f != fold], features)
        if model is None:
            return None
        held = [i for i, f in enumerate(assignment) if f == fold]
        for i, score in zip(held, logistic_scores(model, [rows[i] for i in held]), strict=True):
            scores[i] = score
    return scores


def safe_auroc(scores: Sequence[float], labels: Sequence[bool]) -> float | None:
    """AUROC, or None when one class is empty (undefined)."""
    if all(labels) or not any(labels):
        return None
    return auroc(scores, labels)


def qualities(rows: Sequence[Outcome]) -> tuple[list[float], list[float]]:
    local = [1.0 if row.local_correct else 0.0 for row in rows]
    cloud = [1.0 if row.cloud_correct else 0.0 for row in rows]
    return local, cloud


def curves(
    rows: Sequence[Outcome], confidences: Mapping[str, Sequence[float]]
) -> dict[str, list[DeferralPoint]]:
    """A deferral curve per named confidence, plus length-only, random and oracle."""
    local, cloud = qualities(rows)
    result = {name: deferral_curve(local, cloud, values) for name, values in confidences.items()}
    # Longest prompts to the cloud first; a seeded shuffle breaks length ties fairly.
    order = list(range(len(rows)))
    random.Random(LENGTH_SEED).shuffle(order)
    result["length"] = deferral_curve(
        [local[i] for i in order],
        [cloud[i] for i in order],
        [-float(rows[i].answered.local.prompt_tokens) for i in order],
    )
    result["random"] = random_curve(local, cloud)
    result["oracle"] = oracle_curve(local, cloud)
    return result


def summarise(
    curves_by_name: Mapping[str, list[DeferralPoint]], rows: Sequence[Outcome]
) -> dict[str, dict[str, Any]]:
    """APGR, normalised gain, CPT(50%), CPT(80%), AUC and the points of each curve.

    The PGR-based numbers are None when local and cloud are equally accurate
    (no gap to recover); the gain is None also when the oracle is no better
    than random.
    """
    local, cloud = qualities(rows)
    r_local, r_cloud = math.fsum(local) / len(local), math.fsum(cloud) / len(cloud)
    gap = r_cloud != r_local
    apgrs = {name: apgr(c, r_local, r_cloud) if gap else None for name, c in curves_by_name.items()}
    random_apgr, oracle_apgr = apgrs.get("random"), apgrs.get("oracle")
    summary: dict[str, dict[str, Any]] = {}
    for name, curve in curves_by_name.items():
        value = apgrs[name]
        gain = None
        if value is not None and random_apgr is not None and oracle_apgr is not None:
            if oracle_apgr != random_apgr:
                gain = normalised_gain(value, random_apgr, oracle_apgr)
        summary[name] = {
            "apgr": value,
            "gain": gain,
            "cpt50": cpt(curve, r_local, r_cloud, 0.5) if gap else None,
            "cpt80": cpt(curve, r_local, r_cloud, 0.8) if gap else None,
            "auc": curve_auc(curve),
            "points": [[p.cloud_share, p.quality] for p in curve],
        }
    return summary


def pre_generation_routes(rows: Sequence[Outcome], policy: Policy, *, max_tokens: int) -> list[str]:
    """The route the policy's rules give each item before generation, as if a
    client asked the routed id with a cloud configured: ``local``, ``cloud``,
    ``local_then_check``, or ``local`` for the privacy floor."""
    routes: list[str] = []
    for row in rows:
        item = row.answered.item
        facts = RequestFacts(
            model=policy.models.routed,
            messages=tuple(Message(m["role"], m["content"]) for m in item.chat_messages()),
            prompt=PromptSize.counted(row.answered.local.prompt_tokens),
            max_tokens=max_tokens,
            local_wait_seconds=0.0,
            cloud_configured=True,
        )
        decision = policy.decide(facts)
        assert decision is not None  # the routed id always resolves
        routes.append(decision.route)
    return routes


def gate_ways(rows: Sequence[Outcome], gate: GatePolicy) -> list[Way]:
    """Every item through the gate: kept local, or escalated."""
    return ["local->cloud" if row.escalated_by(gate) else "local" for row in rows]


def policy_ways(rows: Sequence[Outcome], gate: GatePolicy, routes: Sequence[str]) -> list[Way]:
    """The whole policy: the rules' route, then the gate for local_then_check."""
    ways: list[Way] = []
    for row, route in zip(rows, routes, strict=True):
        if route == "cloud":
            ways.append("cloud")
        elif route == "local":
            ways.append("local")
        else:
            ways.append("local->cloud" if row.escalated_by(gate) else "local")
    return ways


def routings(
    rows: Sequence[Outcome], gate: GatePolicy, routes: Sequence[str], prices: Prices
) -> dict[str, dict[str, Any]]:
    """Cost, latency and accuracy of all-local, all-cloud, the gate alone and the
    whole policy (rules, then the gate) at the gate's threshold."""
    answered = [row.answered for row in rows]
    local_ok = [row.local_correct for row in rows]
    cloud_ok = [row.cloud_correct for row in rows]
    ways: dict[str, list[Way]] = {
        "all_local": ["local"] * len(rows),
        "all_cloud": ["cloud"] * len(rows),
        "gate": gate_ways(rows, gate),
        "policy": policy_ways(rows, gate, routes),
    }
    return {
        name: routing_summary(answered, chosen, local_ok, cloud_ok, prices)
        for name, chosen in ways.items()
    }
