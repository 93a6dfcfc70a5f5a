"""Calibration maths on hand-computed cases."""

from __future__ import annotations

import math

import pytest

from router import GatePolicy, confidence_signals
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
    pgr,
    random_curve,
    threshold_for_cloud_share,
)


def _curve(*pairs: tuple[float, float]) -> list[DeferralPoint]:
    return [DeferralPoint(share, quality) for share, quality in pairs]


# --- auroc -------------------------------------------------------------------


def test_auroc_perfect_inverted_and_partial() -> None:
    labels = [False, False, True, True]
    assert auroc([0.1, 0.2, 0.8, 0.9], labels) == 1.0
    assert auroc([0.9, 0.8, 0.2, 0.1], labels) == 0.0
    # pairs (pos, neg): (0.8>0.1) (0.8<0.9) (0.3>0.1) (0.3<0.9) -> 2 of 4
    assert auroc([0.1, 0.9, 0.8, 0.3], labels) == 0.5


def test_auroc_ties_count_half() -> None:
    assert auroc([0.5, 0.5], [False, True]) == 0.5
    # negatives 0.1, 0.5; positive 0.5: beats 0.1 (1) and ties 0.5 (1/2) -> 1.5 / 2
    assert auroc([0.1, 0.5, 0.5], [False, False, True]) == 0.75
    assert auroc([1.0, 1.0, 1.0, 1.0], [True, False, True, False]) == 0.5


def test_auroc_matches_pairwise_count() -> None:
    scores = [0.3, 0.1, 0.3, 0.7, 0.1, 0.9, 0.3]
    labels = [True, False, False, True, True, False, True]
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    pairs = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    assert auroc(scores, labels) == pytest.approx(pairs / (len(pos) * len(neg)))


@pytest.mark.parametrize("labels", [[True, True], [False, False], []])
def test_auroc_needs_both_classes(labels: list[bool]) -> None:
    with pytest.raises(ValueError, match="positive and one negative"):
        auroc([0.0] * len(labels), labels)


def test_auroc_rejects_mismatch_and_nan() -> None:
    with pytest.raises(ValueError, match="2 scores but 1 labels"):
        auroc([0.0, 1.0], [True])
    with pytest.raises(ValueError, match="NaN"):
        auroc([math.nan, 1.0], [True, False])


# --- deferral curves ---------------------------------------------------------

# item:        0      1      2      3
LOCAL = [True, False, True, False]
CLOUD = [True, True, False, True]
# least confident first: 1 (cloud wins), 3 (cloud wins), 2 (local wins), 0 (tie)
CONFIDENCE = [0.9, 0.1, 0.5, 0.3]


def test_deferral_curve_by_hand() -> None:
    curve = deferral_curve(LOCAL, CLOUD, CONFIDENCE)
    assert [p.cloud_share for p in curve] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert [p.quality for p in curve] == pytest.approx([0.5, 0.75, 1.0, 0.75, 0.75])


def test_deferral_curve_endpoints_are_all_local_and_all_cloud() -> None:
    local = [0.2, 0.9, 0.4, 1.0, 0.0]
    cloud = [0.8, 0.7, 0.9, 0.3, 1.0]
    curve = deferral_curve(local, cloud, [3.0, -1.0, 0.5, 2.0, 0.0])
    assert curve[0] == DeferralPoint(0.0, pytest.approx(sum(local) / 5))
    assert curve[-1] == DeferralPoint(1.0, pytest.approx(sum(cloud) / 5))
    assert len(curve) == 6


def test_deferral_ties_defer_the_earlier_item_first() -> None:
    # Items 0 and 1 tie; item 0 (local right, cloud wrong) is deferred first.
    curve = deferral_curve([True, False], [False, True], [0.0, 0.0])
    assert [p.quality for p in curve] == [0.5, 0.0, 0.5]


def test_length_router_defers_longest_prompts_first() -> None:
    lengths = [10, 500, 40]
    curve = deferral_curve([True, False, True], [True, True, False], [-n for n in lengths])
    # 500 (cloud wins) first, then 40 (local wins), then 10 (tie)
    assert [p.quality for p in curve] == pytest.approx([2 / 3, 1.0, 2 / 3, 2 / 3])


def test_random_curve_is_linear() -> None:
    curve = random_curve(LOCAL, CLOUD)
    assert [p.quality for p in curve] == pytest.approx([0.5, 0.5625, 0.625, 0.6875, 0.75])


def test_oracle_dominates_policy_dominates_inverted() -> None:
    oracle = oracle_curve(LOCAL, CLOUD)
    policy = deferral_curve(LOCAL, CLOUD, CONFIDENCE)
    inverted = deferral_curve(LOCAL, CLOUD, [-c for c in CONFIDENCE])
    # oracle: 1, 3 (cloud wins), 0 (tie), then 2 (local wins)
    assert [p.quality for p in oracle] == pytest.approx([0.5, 0.75, 1.0, 1.0, 0.75])
    for best, mid, worst in zip(oracle, policy, inverted, strict=True):
        assert best.quality >= mid.quality >= worst.quality
    assert curve_auc(oracle) > curve_auc(policy) > curve_auc(random_curve(LOCAL, CLOUD))
    assert curve_auc(random_curve(LOCAL, CLOUD)) > curve_auc(inverted)


def test_curve_inputs_are_checked() -> None:
    with pytest.raises(ValueError, match="2 local results but 1 cloud"):
        deferral_curve([True, True], [True], [0.0, 0.0])
    with pytest.raises(ValueError, match="confidences"):
        deferral_curve([True], [True], [])
    with pytest.raises(ValueError, match="at least one item"):
        random_curve([], [])


# --- pgr, apgr, cpt, auc -----------------------------------------------------


def test_pgr() -> None:
    assert pgr(0.6, 0.5, 0.75) == pytest.approx(0.4)
    assert pgr(0.5, 0.5, 0.75) == 0.0
    assert pgr(0.8, 0.5, 0.75) == pytest.approx(1.2)
    with pytest.raises(ValueError, match="equal"):
        pgr(0.5, 0.5, 0.5)


def test_apgr_of_oracle_by_hand() -> None:
    # Two items, cloud wins one: local 0.5, cloud 1.0.
    # Oracle quality 0.5, 1.0, 1.0 -> PGR 0, 1, 1 -> area 0.5*0.5 + 0.5*1 = 0.75
    oracle = oracle_curve([True, False], [True, True])
    assert apgr(oracle, 0.5, 1.0) == pytest.approx(0.75)
    assert apgr(random_curve([True, False], [True, True]), 0.5, 1.0) == pytest.approx(0.5)


def test_apgr_needs_the_full_range() -> None:
    with pytest.raises(ValueError, match="share 0 to 1"):
        apgr(_curve((0.0, 0.5), (0.5, 0.7)), 0.5, 1.0)
    with pytest.raises(ValueError, match="increasing"):
        apgr(_curve((0.0, 0.5), (1.0, 0.7), (0.5, 0.6)), 0.5, 1.0)


def test_curve_auc() -> None:
    # trapezoids: 0.5 * (0.5 + 1.0) / 2 + 0.5 * (1.0 + 0.5) / 2 = 0.75
    assert curve_auc(_curve((0.0, 0.5), (0.5, 1.0), (1.0, 0.5))) == pytest.approx(0.75)


# PGR with r_local 0, r_cloud 1 is the quality itself:
# 0.0 -> 0.6 crosses 0.5 at share 0.1 * 5/6, dips to 0.2, crosses again later.
NON_MONOTONIC = _curve((0.0, 0.0), (0.1, 0.6), (0.2, 0.2), (0.5, 0.9), (1.0, 1.0))


def test_cpt_returns_the_first_crossing_of_a_non_monotonic_curve() -> None:
    assert cpt(NON_MONOTONIC, 0.0, 1.0, 0.5) == pytest.approx(0.1 * 5 / 6)
    # 0.7 is first reached in the segment 0.2 -> 0.5: 0.2 + 0.3 * (0.5 / 0.7)
    assert cpt(NON_MONOTONIC, 0.0, 1.0, 0.7) == pytest.approx(0.2 + 0.3 * 0.5 / 0.7)


def test_cpt_exact_points_and_start() -> None:
    assert cpt(NON_MONOTONIC, 0.0, 1.0, 0.6) == pytest.approx(0.1)
    assert cpt(NON_MONOTONIC, 0.0, 1.0, 0.0) == 0.0
    assert cpt(NON_MONOTONIC, 0.0, 1.0, 1.0) == 1.0


def test_cpt_none_when_unreachable() -> None:
    assert cpt(NON_MONOTONIC, 0.0, 1.0, 1.01) is None
    # A curve that never recovers half the gap.
    assert cpt(_curve((0.0, 0.5), (0.5, 0.6), (1.0, 0.55)), 0.5, 1.0, 0.5) is None


# --- fit_logistic ------------------------------------------------------------

# Per answer: token log-probabilities; right answers are confident throughout.
RIGHT = [[-0.1, -0.2, -0.1], [-0.3, -0.1], [-0.05, -0.4, -0.2, -0.1], [-0.2]]
WRONG = [[-2.5, -0.1, -3.0], [-4.0, -1.0], [-0.3, -5.0, -2.0, -0.2], [-3.5]]


def _features(logprobs: list[float]) -> dict[str, float]:
    return confidence_signals(logprobs, quantile=0.1, first_k=8)


def test_fit_logistic_separates_a_separable_set() -> None:
    rows = [_features(lp) for lp in RIGHT + WRONG]
    labels = [True] * len(RIGHT) + [False] * len(WRONG)
    model = fit_logistic(rows, labels)
    assert set(model.weights) == {
        "mean",
        "min",
        "quantile",
        "first_k_min",
        "length",
        "log_prompt_tokens",
    }
    assert auroc([model.probability(row) for row in rows], labels) == 1.0

    gate = GatePolicy(signal="logistic", threshold=0.5, logistic=model)
    for logprobs, label in zip(RIGHT + WRONG, labels, strict=True):
        assert gate.judge(logprobs).escalate is (not label)


def test_fit_logistic_is_deterministic_and_folds_scaling_back() -> None:
    # One feature on a large raw scale: the raw-feature model must still be right.
    rows = [{"length": x} for x in (100.0, 200.0, 300.0, 400.0, 500.0, 600.0)]
    labels = [False, False, True, False, True, True]
    first = fit_logistic(rows, labels)
    assert first == fit_logistic(rows, labels)
    assert first.weights["length"] > 0
    # Overlapping classes: the fit is finite, and its midpoint sits at the middle (350).
    assert first.probability({"length": 350.0}) == pytest.approx(0.5, abs=1e-6)


def test_fit_logistic_matches_the_likelihood_optimum() -> None:
    # Without penalty and with balanced overlap the MLE has a closed form:
    # labels at x=0: 1 of 4 positive; at x=1: 3 of 4 -> logits -ln 3 and ln 3.
    rows = [{"min": 0.0}] * 4 + [{"min": 1.0}] * 4
    labels = [True, False, False, False, True, True, True, False]
    model = fit_logistic(rows, labels, l2=0.0)
    assert model.intercept == pytest.approx(-math.log(3))
    assert model.weights["min"] == pytest.approx(2 * math.log(3))


def test_fit_logistic_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="unknown features"):
        fit_logistic([{"nope": 1.0}, {"nope": 2.0}], [True, False])
    with pytest.raises(ValueError, match="non-finite"):
        fit_logistic([_features([]), _features([-1.0])], [False, True])
    with pytest.raises(ValueError, match="row 1 has features"):
        fit_logistic([{"min": 1.0}, {"mean": 1.0}], [True, False])
    with pytest.raises(ValueError, match="nothing to fit"):
        fit_logistic([], [])


# --- threshold_for_cloud_share ----------------------------------------------


def _escalated(confidences: list[float], threshold: float) -> int:
    return sum(1 for c in confidences if c < threshold)


@pytest.mark.parametrize(("share", "count"), [(0.0, 0), (0.25, 1), (0.5, 2), (0.6, 2), (1.0, 4)])
def test_threshold_for_cloud_share(share: float, count: int) -> None:
    confidences = [-0.5, -3.0, -1.0, -2.0]
    threshold = threshold_for_cloud_share(confidences, share)
    assert _escalated(confidences, threshold) == count
    gate = GatePolicy(signal="min", threshold=min(threshold, 0.0))
    if share < 1.0:
        assert sum(gate.judge([c]).escalate for c in confidences) == count


def test_threshold_ties_round_towards_local() -> None:
    confidences = [-2.0, -1.0, -1.0, -1.0]
    # Wanted 2 of 4; the tie at -1.0 keeps all three local.
    threshold = threshold_for_cloud_share(confidences, 0.5)
    assert threshold == -1.0
    assert _escalated(confidences, threshold) == 1


def test_threshold_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="share"):
        threshold_for_cloud_share([0.0], 1.5)
    with pytest.raises(ValueError, match="no confidences"):
        threshold_for_cloud_share([], 0.5)


# --- normalised gain ---------------------------------------------------------


def test_normalised_gain_by_hand_equals_two_auroc_minus_one() -> None:
    # The gold stand-in: the cloud is right on every item, local on items 0 and 2.
    local = [True, False, True, False, False]
    cloud = [True] * 5
    confidence = [0.9, 0.2, 0.4, 0.6, 0.1]
    # Right answers 0.9 and 0.4 against wrong 0.2, 0.6, 0.1: 5 of 6 pairs ordered.
    assert auroc(confidence, local) == pytest.approx(5 / 6)
    # Deferring 4, 1, 2, 3, 0: PGR 0, 1/3, 2/3, 2/3, 1, 1 at steps of 0.2.
    curve = deferral_curve(local, cloud, confidence)
    assert apgr(curve, 0.4, 1.0) == pytest.approx(19 / 30)
    # The oracle's ceiling with local accuracy p is 0.5 + p / 2, not 1.
    oracle = apgr(oracle_curve(local, cloud), 0.4, 1.0)
    assert oracle == pytest.approx(0.7)
    random = apgr(random_curve(local, cloud), 0.4, 1.0)
    assert random == pytest.approx(0.5)
    gain = normalised_gain(apgr(curve, 0.4, 1.0), random, oracle)
    assert gain == pytest.approx(2 / 3)
    assert gain == pytest.approx(2 * auroc(confidence, local) - 1)
    assert normalised_gain(oracle, random, oracle) == pytest.approx(1.0)
    assert normalised_gain(random, random, oracle) == pytest.approx(0.0)


def test_normalised_gain_undefined_without_headroom() -> None:
    with pytest.raises(ValueError, match="oracle equals random"):
        normalised_gain(0.5, 0.5, 0.5)
