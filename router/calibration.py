"""Calibration maths for the confidence gate: how well a signal ranks answers,
what it buys at each cloud share, and the threshold or model that realises it.

Pure Python on purpose (no numpy): router/ stays import-light, and the sizes
involved (hundreds to a few thousand evaluated prompts) do not need vectors.

Deferral curves follow RouteLLM (Ong et al. 2024, "RouteLLM: Learning to Route
LLMs with Preference Data"): a router at cloud share ``c`` sends the ``c * n``
least confident items to the cloud and keeps the rest local; the curve is the
mean quality at every share. PGR (performance gap recovered) rescales quality
so that all-local is 0 and all-cloud is 1; APGR is its area over the share, and
CPT(x) the smallest cloud share that recovers ``x`` of the gap.

A length-only router (RouteLLM's simplest baseline: long prompts are hard) is
``deferral_curve(local, cloud, [-length for length in prompt_lengths])``: the
longest prompts are the least "confident" and go to the cloud first.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import get_args

from router.gate import Feature, LogisticGate


@dataclass(frozen=True)
class DeferralPoint:
    #: fraction of items sent to the cloud, in [0, 1]
    cloud_share: float
    #: mean quality over all items (cloud quality for deferred items, local for the rest)
    quality: float


def _check_finite(values: Sequence[float], what: str) -> None:
    for value in values:
        if math.isnan(value):
            raise ValueError(f"{what} contains NaN")


def auroc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """The probability that a random positive scores higher than a random
    negative; a tie counts one half (the Mann-Whitney U statistic, normalised).

    Computed from average ranks in O(n log n). Raises ValueError when the
    lengths differ, a score is NaN, or either class is empty (AUROC is then
    undefined, and 0.5 would hide the problem).
    """
    if len(scores) != len(labels):
        raise ValueError(f"{len(scores)} scores but {len(labels)} labels")
    _check_finite(scores, "scores")
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUROC needs at least one positive and one negative label")
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    rank_sum = 0.0
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and scores[order[end + 1]] == scores[order[start]]:
            end += 1
        # Tied items share the mean of their 1-based ranks: that is what makes
        # a tie between a positive and a negative count one half.
        average_rank = (start + end) / 2 + 1
        rank_sum += average_rank * sum(1 for i in order[start : end + 1] if labels[i])
        start = end + 1
    u = rank_sum - positives * (positives + 1) / 2
    return u / (positives * negatives)


def _check_items(local: Sequence[float], cloud: Sequence[float]) -> None:
    if len(local) != len(cloud):
        raise ValueError(f"{len(local)} local results but {len(cloud)} cloud results")
    if not local:
        raise ValueError("a curve needs at least one item")
    _check_finite(local, "local quality")
    _check_finite(cloud, "cloud quality")


def deferral_curve(
    local: Sequence[float], cloud: Sequence[float], confidence: Sequence[float]
) -> list[DeferralPoint]:
    """Quality at every cloud share k/n, k = 0..n, deferring the least confident first.

    ``local[i]`` and ``cloud[i]`` are item i's quality from each side (bools
    count as 0/1; graded scores work too). Ties in confidence are broken by
    input order: among equally confident items the earlier one goes to the
    cloud first. That is deterministic but arbitrary; a signal with many ties
    (a length router, a saturated probability) looks better or worse at shares
    inside a tie depending on the order, so shuffle the items with a fixed seed
    when the input order carries meaning.
    """
    _check_items(local, cloud)
    if len(confidence) != len(local):
        raise ValueError(f"{len(local)} items but {len(confidence)} confidences")
    _check_finite(confidence, "confidence")
    n = len(local)
    order = sorted(range(n), key=lambda i: (confidence[i], i))
    total = math.fsum(local)
    points = [DeferralPoint(0.0, total / n)]
    for k, i in enumerate(order, start=1):
        total += cloud[i] - local[i]
        points.append(DeferralPoint(k / n, total / n))
    # The running sum drifts by rounding; pin the end to the exact all-cloud mean.
    points[-1] = DeferralPoint(1.0, math.fsum(cloud) / n)
    return points


def random_curve(local: Sequence[float], cloud: Sequence[float]) -> list[DeferralPoint]:
    """The expected curve of a router that defers a random c * n items: a
    straight line from all-local to all-cloud quality (PGR = share)."""
    _check_items(local, cloud)
    n = len(local)
    r_local = math.fsum(local) / n
    r_cloud = math.fsum(cloud) / n
    return [DeferralPoint(k / n, r_local + (k / n) * (r_cloud - r_local)) for k in range(n + 1)]


def oracle_curve(local: Sequence[float], cloud: Sequence[float]) -> list[DeferralPoint]:
    """The best curve any router could reach on these items.

    Items go to the cloud in order of how much the cloud beats local (largest
    gain first, input order among equal gains): first every item the cloud
    wins, then the ties, then those local wins. Taking the k largest gains
    maximises the sum at every k, so this curve is at or above every other
    deferral curve point by point.
    """
    _check_items(local, cloud)
    return deferral_curve(local, cloud, [lo - cl for lo, cl in zip(local, cloud, strict=True)])


def pgr(quality: float, r_local: float, r_cloud: float) -> float:
    """Performance gap recovered: 0 at all-local quality, 1 at all-cloud.

    Raises ValueError when r_cloud == r_local: there is no gap to recover, and
    a NaN would silently poison every APGR and CPT built on it.
    """
    if r_cloud == r_local:
        raise ValueError("PGR is undefined when local and cloud quality are equal")
    return (quality - r_local) / (r_cloud - r_local)


def _check_curve(curve: Sequence[DeferralPoint]) -> None:
    if len(curve) < 2:
        raise ValueError("a curve needs at least two points")
    shares = [point.cloud_share for point in curve]
    if any(b < a for a, b in zip(shares, shares[1:], strict=False)):
        raise ValueError("curve points must be in increasing cloud share")


def _trapezoid(xs: Sequence[float], ys: Sequence[float]) -> float:
    return math.fsum((xs[i + 1] - xs[i]) * (ys[i] + ys[i + 1]) / 2 for i in range(len(xs) - 1))


def apgr(curve: Sequence[DeferralPoint], r_local: float, r_cloud: float) -> float:
    """Average PGR: the trapezoid area under PGR over cloud share.

    The curve must span shares 0 to 1 (as every curve built here does), so the
    area is an average over the whole range. 0.5 for a random router.
    """
    _check_curve(curve)
    if curve[0].cloud_share != 0.0 or curve[-1].cloud_share != 1.0:
        raise ValueError("APGR needs a curve from cloud share 0 to 1")
    shares = [point.cloud_share for point in curve]
    return _trapezoid(shares, [pgr(point.quality, r_local, r_cloud) for point in curve])


def normalised_gain(value: float, random_apgr: float, oracle_apgr: float) -> float:
    """Where an APGR lies between a random router (0) and the oracle (1):
    ``(APGR - APGR_random) / (APGR_oracle - APGR_random)``.

    APGR alone hides a ceiling: when the cloud is always right and the local
    model right on a share p of items, the oracle reaches only 0.5 + p / 2. In
    that setting the gain of a confidence curve equals 2 * AUROC - 1 (up to
    ties and the discrete trapezoid). Raises ValueError when the oracle is no
    better than random (nothing to gain).
    """
    if oracle_apgr == random_apgr:
        raise ValueError("the normalised gain is undefined when the oracle equals random")
    return (value - random_apgr) / (oracle_apgr - random_apgr)


def cpt(
    curve: Sequence[DeferralPoint], r_local: float, r_cloud: float, target: float
) -> float | None:
    """Call-performance threshold: the smallest cloud share at which PGR reaches target.

    Real curves are not monotonic (deferring an item the local model got right
    and the cloud got wrong lowers quality), so this walks the points in order
    and stops at the FIRST crossing, rather than interpolating on the curve as
    if it were sorted. A point at or above target is returned as is; when PGR
    goes from below target at one point to at or above it at the next, the
    share is interpolated linearly inside that segment only. None when no
    point reaches target.
    """
    _check_curve(curve)
    previous: tuple[float, float] | None = None
    for point in curve:
        value = pgr(point.quality, r_local, r_cloud)
        if value >= target:
            if previous is None:
                return point.cloud_share
            share0, value0 = previous
            fraction = (target - value0) / (value - value0)
            return share0 + fraction * (point.cloud_share - share0)
        previous = (point.cloud_share, value)
    return None


def curve_auc(curve: Sequence[DeferralPoint]) -> float:
    """Trapezoid area under quality over cloud share (the mean quality when the
    curve spans 0 to 1)."""
    _check_curve(curve)
    return _trapezoid([p.cloud_share for p in curve], [p.quality for p in curve])


_FEATURES: frozenset[str] = frozenset(get_args(Feature))


def _solve(matrix: list[list[float]], vector: list[float]) -> list[float] | None:
    """Gaussian elimination with partial pivoting; None when (nearly) singular."""
    size = len(vector)
    rows = [[*row, value] for row, value in zip(matrix, vector, strict=True)]
    for col in range(size):
        pivot = max(range(col, size), key=lambda r: abs(rows[r][col]))
        if abs(rows[pivot][col]) < 1e-12:
            return None
        rows[col], rows[pivot] = rows[pivot], rows[col]
        for r in range(col + 1, size):
            factor = rows[r][col] / rows[col][col]
            for c in range(col, size + 1):
                rows[r][c] -= factor * rows[col][c]
    solution = [0.0] * size
    for r in reversed(range(size)):
        tail = math.fsum(rows[r][c] * solution[c] for c in range(r + 1, size))
        solution[r] = (rows[r][size] - tail) / rows[r][r]
    return solution


def _sigmoid(z: float) -> float:
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


def _log1pexp(z: float) -> float:
    # log(1 + e^z) without overflow for large z.
    return z + math.log1p(math.exp(-z)) if z > 0 else math.log1p(math.exp(z))


def fit_logistic(
    features: Sequence[Mapping[str, float]],
    labels: Sequence[bool],
    *,
    l2: float = 1e-3,
    iterations: int = 500,
) -> LogisticGate:
    """Fit P(label) = sigmoid(intercept + sum of weight * feature) by L2-penalised
    maximum likelihood, returned as the gate's :class:`LogisticGate`.

    ``features`` are dicts as :func:`router.gate.confidence_signals` returns
    (every item must have the same names, all of them gate features). Features
    are standardised internally so that one ``l2`` suits log-probabilities and
    token counts alike, then the scaling is folded back into the weights: the
    returned gate works on raw features. The penalty,
    ``l2 / 2 * |standardised weights|^2``, spares the intercept; it keeps the
    weights finite on separable data.

    Newton's method with step halving, at most ``iterations`` steps, stopping
    when the gradient vanishes: deterministic, and exact to rounding on these
    few dimensions. Non-finite features are refused: an empty answer's -inf
    signals carry no ranking information (the gate escalates empty answers
    anyway), so leave such items out.
    """
    if len(features) != len(labels):
        raise ValueError(f"{len(features)} feature rows but {len(labels)} labels")
    if not features:
        raise ValueError("nothing to fit")
    if l2 < 0 or iterations < 1:
        raise ValueError("l2 must be >= 0 and iterations >= 1")
    names = list(features[0])
    if not names:
        raise ValueError("no features")
    unknown = sorted(set(names) - _FEATURES)
    if unknown:
        raise ValueError(f"unknown features {unknown}; expected some of {sorted(_FEATURES)}")
    for row_index, row in enumerate(features):
        if set(row) != set(names):
            raise ValueError(f"row {row_index} has features {sorted(row)}, not {sorted(names)}")
        if not all(math.isfinite(row[name]) for name in names):
            raise ValueError(f"row {row_index} has a non-finite feature")

    n = len(features)
    means = [math.fsum(row[name] for row in features) / n for name in names]
    scales = []
    for name, mean in zip(names, means, strict=True):
        spread = math.sqrt(math.fsum((row[name] - mean) ** 2 for row in features) / n)
        # A constant feature stays centred at 0; dividing by 0 would not help.
        scales.append(spread if spread > 0 else 1.0)
    # Column 0 is the intercept.
    design = [
        [1.0, *((row[name] - m) / s for name, m, s in zip(names, means, scales, strict=True))]
        for row in features
    ]
    targets = [1.0 if label else 0.0 for label in labels]
    size = len(names) + 1
    penalty = [0.0] + [l2] * len(names)

    def loss(beta: list[float]) -> float:
        zs = [math.fsum(b * v for b, v in zip(beta, x, strict=True)) for x in design]
        total = math.fsum(_log1pexp(z) - t * z for z, t in zip(zs, targets, strict=True))
        return total / n + math.fsum(p * b * b for p, b in zip(penalty, beta, strict=True)) / 2

    beta = [0.0] * size
    current = loss(beta)
    for _ in range(iterations):
        probs = [_sigmoid(math.fsum(b * v for b, v in zip(beta, x, strict=True))) for x in design]
        gradient = [
            math.fsum((p - t) * x[j] for p, t, x in zip(probs, targets, design, strict=True)) / n
            + penalty[j] * beta[j]
            for j in range(size)
        ]
        if max(abs(g) for g in gradient) < 1e-10:
            break
        hessian = [
            [
                math.fsum(p * (1 - p) * x[j] * x[k] for p, x in zip(probs, design, strict=True)) / n
                + (penalty[j] if j == k else 0.0)
                for k in range(size)
            ]
            for j in range(size)
        ]
        # A saturated fit can make the Hessian singular; a gradient step still descends.
        step = _solve(hessian, gradient) or gradient
        scale = 1.0
        while scale > 1e-10:
            candidate = [b - scale * s for b, s in zip(beta, step, strict=True)]
            candidate_loss = loss(candidate)
            if candidate_loss <= current:
                break
            scale /= 2
        else:
            break  # no step improves the loss: converged to rounding
        beta, current = candidate, candidate_loss

    weights = {name: w / s for name, w, s in zip(names, beta[1:], scales, strict=True)}
    intercept = beta[0] - math.fsum(
        w * m / s for w, m, s in zip(beta[1:], means, scales, strict=True)
    )
    return LogisticGate.model_validate({"intercept": intercept, "weights": weights})


def threshold_for_cloud_share(confidences: Sequence[float], share: float) -> float:
    """A gate threshold that escalates about ``share`` of these items under
    GatePolicy's rule "escalate when confidence < threshold".

    The target count is ``share * n`` rounded to the nearest integer (halves
    up), and the threshold is the confidence of the first item kept local in
    ascending order, so the k least confident escalate and it passes (equal
    passes). Items tied at that confidence all stay local, so with ties the
    share realised is at most the target: ties round towards local. For share 1
    the threshold is just above the highest confidence, which may lie outside
    a signal's valid range (> 0 for log-probabilities); a cloud-only policy
    says that better.
    """
    if not confidences:
        raise ValueError("no confidences")
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"share must be in [0, 1], got {share}")
    _check_finite(confidences, "confidences")
    ordered = sorted(confidences)
    k = math.floor(share * len(ordered) + 0.5)
    if k >= len(ordered):
        return math.nextafter(ordered[-1], math.inf)
    return ordered[k]
