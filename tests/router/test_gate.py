"""The confidence gate: signals on hand-computed data, the logistic model, edges."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from router import GatePolicy, GateVerdict, PolicyError, confidence_signals, parse_policy
from router.gate import MissingEntropiesError, interpolated_quantile

# sorted: -4.0, -2.0, -0.5, -0.2, -0.1
LOGPROBS = [-0.1, -0.5, -2.0, -0.2, -4.0]


def _gate(**fields: object) -> GatePolicy:
    return GatePolicy.model_validate(fields)


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"signal": "mean"}, -1.36),
        ({"signal": "min"}, -4.0),
        # position 0.1 * 4 = 0.4 between -4.0 and -2.0
        ({"signal": "quantile", "quantile": 0.1}, -3.2),
        ({"signal": "quantile", "quantile": 0.5}, -0.5),
        ({"signal": "quantile", "quantile": 0.0}, -4.0),
        ({"signal": "quantile", "quantile": 1.0}, -0.1),
        ({"signal": "first_k_min", "first_k": 2}, -0.5),
        ({"signal": "first_k_min", "first_k": 3}, -2.0),
        ({"signal": "first_k_min", "first_k": 50}, -4.0),
    ],
)
def test_signals(fields: dict[str, object], expected: float) -> None:
    assert _gate(**fields).score(LOGPROBS) == pytest.approx(expected)


def test_confidence_signals_lists_every_feature() -> None:
    signals = confidence_signals(LOGPROBS, quantile=0.1, first_k=2, prompt_tokens=20)
    assert signals == pytest.approx(
        {
            "mean": -1.36,
            "min": -4.0,
            "quantile": -3.2,
            "first_k_min": -0.5,
            "length": 5.0,
            "log_prompt_tokens": math.log(21),
        }
    )
    # unknown prompt length: the feature is ln(1 + 0) = 0
    assert confidence_signals(LOGPROBS, quantile=0.1, first_k=2)["log_prompt_tokens"] == 0.0


def test_quantile_matches_numpy_default() -> None:
    rng = random.Random(7)
    for size in (1, 2, 3, 10, 64, 101):
        values = [-rng.expovariate(1.0) for _ in range(size)]
        for q in (0.0, 0.05, 0.1, 0.33, 0.5, 0.9, 1.0):
            assert interpolated_quantile(values, q) == pytest.approx(float(np.quantile(values, q)))


def test_logistic_gate() -> None:
    gate = _gate(
        signal="logistic",
        threshold=0.5,
        logistic={"intercept": 1.0, "weights": {"min": 0.5, "length": -0.1}},
    )
    # z = 1 + 0.5 * -4 - 0.1 * 5 = -1.5
    expected = 1 / (1 + math.exp(1.5))
    assert gate.score(LOGPROBS) == pytest.approx(expected)
    assert gate.judge(LOGPROBS) == GateVerdict(
        confidence=pytest.approx(expected), threshold=0.5, escalate=True
    )
    assert gate.judge([-0.01, -0.02]).escalate is False  # z = 1 - 0.01 - 0.2 > 0


def test_logistic_never_overflows() -> None:
    weights = {"mean": 1e6}
    gate = _gate(signal="logistic", threshold=0.5, logistic={"weights": weights})
    assert gate.score([-1.0]) == 0.0
    assert _gate(signal="logistic", threshold=0.5, logistic={"weights": {"length": 1e6}}).score(
        [-1.0]
    ) == pytest.approx(1.0)


def test_escalates_below_the_threshold_only() -> None:
    gate = _gate(signal="min", threshold=-3.0)
    assert gate.judge([-0.5, -3.0000001]).escalate is True
    # Equal to the threshold passes: the threshold is the lowest acceptable confidence.
    assert gate.judge([-0.5, -3.0]) == GateVerdict(confidence=-3.0, threshold=-3.0, escalate=False)
    assert gate.judge([-0.5, -2.9]).escalate is False


def test_empty_answer_escalates() -> None:
    assert _gate(signal="min", threshold=-100.0).judge([]) == GateVerdict(
        confidence=-math.inf, threshold=-100.0, escalate=True
    )
    assert _gate(signal="mean").score([]) == -math.inf
    logistic = _gate(signal="logistic", threshold=0.0, logistic={"weights": {"min": 1.0}})
    assert logistic.judge([]) == GateVerdict(confidence=0.0, threshold=0.0, escalate=True)
    assert confidence_signals([], quantile=0.1, first_k=8)["length"] == 0.0


def test_hard_floor() -> None:
    gate = _gate(hard_floor=-7.0)
    assert gate.below_hard_floor(-7.5)
    assert not gate.below_hard_floor(-7.0)
    assert not _gate().below_hard_floor(-100.0)


def test_defaults() -> None:
    gate = GatePolicy()
    assert (gate.signal, gate.threshold, gate.holdback_tokens, gate.hard_floor) == (
        "min",
        -3.0,
        16,
        None,
    )


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        ("{signal: logistic, threshold: 0.5}", "gate.logistic: required when signal is logistic"),
        (
            "{signal: logistic, threshold: -1, logistic: {weights: {min: 1}}}",
            "gate.threshold: the logistic signal is a probability",
        ),
        ("{signal: min, threshold: 0.5}", "gate.threshold: the min signal is a log-probability"),
        ("{quantile: 1.5}", "gate.quantile: Input should be less than or equal to 1"),
        ("{first_k: 0}", "gate.first_k: Input should be greater than or equal to 1"),
        ("{hard_floor: 1.0}", "gate.hard_floor: Input should be less than or equal to 0"),
        ("{threshold: .nan}", "gate.threshold: Input should be a finite number"),
        ("{signal: median}", "gate.signal: Input should be 'mean', 'min'"),
        (
            "{signal: logistic, threshold: 0.5, logistic: {weights: {}}}",
            "gate.logistic.weights: Dictionary should have at least 1 item",
        ),
        (
            "{signal: logistic, threshold: 0.5, logistic: {weights: {max: 1}}}",
            "gate.logistic.weights.max: key 'max': Input should be 'mean'",
        ),
    ],
)
def test_invalid_gates(gate: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(f"gate: {gate}", "p.yaml")
    assert f"p.yaml: {message}" in str(caught.value)


def test_judge_on_a_policy_gate() -> None:
    policy = parse_policy("gate: {signal: quantile, quantile: 0.5, threshold: -1.0}")
    assert policy.gate.judge(LOGPROBS) == GateVerdict(-0.5, -1.0, False)


# one per token of LOGPROBS; negated and sorted: -3.0, -2.5, -1.0, -0.4, -0.2
ENTROPIES = [0.2, 1.0, 2.5, 0.4, 3.0]


def test_entropy_features_by_hand() -> None:
    signals = confidence_signals(LOGPROBS, quantile=0.1, first_k=2, entropies=ENTROPIES)
    assert {k: v for k, v in signals.items() if k.startswith("neg_")} == pytest.approx(
        {
            "neg_mean_entropy": -7.1 / 5,
            "neg_max_entropy": -3.0,
            # position 0.1 * 4 = 0.4 between -3.0 and -2.5
            "neg_entropy_quantile": -2.8,
            "neg_first_k_mean_entropy": -0.6,
            "neg_first_k_max_entropy": -1.0,
        }
    )
    # the log-probability features do not change
    assert signals["min"] == -4.0 and signals["length"] == 5.0
    # without entropies the entropy features are absent, not made up
    assert not any(
        k.startswith("neg_") for k in confidence_signals(LOGPROBS, quantile=0.1, first_k=2)
    )


def test_entropy_features_of_an_empty_answer() -> None:
    signals = confidence_signals([], quantile=0.1, first_k=2, entropies=[])
    assert signals["neg_mean_entropy"] == -math.inf
    assert signals["neg_first_k_max_entropy"] == -math.inf


def test_one_entropy_per_token() -> None:
    with pytest.raises(ValueError, match="5 log-probabilities but 2 entropies"):
        confidence_signals(LOGPROBS, quantile=0.1, first_k=2, entropies=[0.1, 0.2])


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"signal": "neg_mean_entropy"}, -1.42),
        ({"signal": "neg_max_entropy"}, -3.0),
        ({"signal": "neg_entropy_quantile", "quantile": 0.1}, -2.8),
        ({"signal": "neg_first_k_mean_entropy", "first_k": 3}, -(0.2 + 1.0 + 2.5) / 3),
        ({"signal": "neg_first_k_max_entropy", "first_k": 2}, -1.0),
    ],
)
def test_entropy_signals(fields: dict[str, object], expected: float) -> None:
    gate = _gate(**fields)
    assert gate.needs_entropies
    assert gate.score(LOGPROBS, entropies=ENTROPIES) == pytest.approx(expected)


def test_a_gate_that_needs_entropies_refuses_to_guess() -> None:
    gate = _gate(signal="neg_max_entropy", threshold=-2.0)
    with pytest.raises(MissingEntropiesError, match="neg_max_entropy signal needs"):
        gate.judge(LOGPROBS)
    assert gate.judge(LOGPROBS, entropies=ENTROPIES) == GateVerdict(-3.0, -2.0, True)
    assert gate.judge([-0.1], entropies=[1.9]) == GateVerdict(-1.9, -2.0, False)
    # an empty answer still escalates
    assert gate.judge([], entropies=[]).escalate is True
    logistic = _gate(
        signal="logistic", threshold=0.5, logistic={"weights": {"min": 1.0, "neg_max_entropy": 1.0}}
    )
    assert logistic.needs_entropies
    with pytest.raises(MissingEntropiesError):
        logistic.score(LOGPROBS)
    # z = -4 - 3 = -7
    assert logistic.score(LOGPROBS, entropies=ENTROPIES) == pytest.approx(1 / (1 + math.exp(7)))
    # gates on log-probabilities alone ignore entropies, given or not
    for gate in (_gate(signal="min"), _gate(signal="logistic", logistic={"weights": {"min": 1.0}})):
        assert not gate.needs_entropies
        assert gate.score(LOGPROBS) == gate.score(LOGPROBS, entropies=ENTROPIES)


def test_policy_files_take_entropy_gates() -> None:
    policy = parse_policy("gate: {signal: neg_mean_entropy, threshold: -1.5}")
    assert policy.gate.judge(LOGPROBS, entropies=ENTROPIES) == GateVerdict(
        pytest.approx(-1.42), -1.5, False
    )
    weights = "{neg_entropy_quantile: 0.5, neg_first_k_mean_entropy: 1.0, mean: 2.0}"
    policy = parse_policy(
        f"gate: {{signal: logistic, threshold: 0.5, logistic: {{weights: {weights}}}}}"
    )
    assert policy.gate.logistic is not None
    assert set(policy.gate.logistic.weights) == {
        "neg_entropy_quantile",
        "neg_first_k_mean_entropy",
        "mean",
    }


@pytest.mark.parametrize(
    ("gate", "message"),
    [
        (
            "{signal: neg_max_entropy, threshold: 0.5}",
            "gate.threshold: the neg_max_entropy signal is a negated entropy (<= 0)",
        ),
        (
            "{signal: logistic, threshold: 0.5, logistic: {weights: {max_entropy: 1}}}",
            "gate.logistic.weights.max_entropy: key 'max_entropy': Input should be 'mean'",
        ),
        ("{signal: entropy}", "gate.signal: Input should be 'mean', 'min'"),
    ],
)
def test_invalid_entropy_gates(gate: str, message: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(f"gate: {gate}", "p.yaml")
    assert f"p.yaml: {message}" in str(caught.value)
