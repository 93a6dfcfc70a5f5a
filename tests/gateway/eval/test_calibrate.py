"""Fitting the gate on the calibration split and reporting on the held-out split only."""

from __future__ import annotations

import math

import pytest

from gateway.eval.answering import Answered, CloudAnswer, LocalAnswer
from gateway.eval.calibrate import CalibrationError, Target, calibrate, fit_gate
from gateway.eval.costs import Prices
from gateway.eval.dataset import EvalItem
from gateway.eval.run import RunInfo
from gateway.eval.scoring import outcomes
from gateway.eval.split import split
from gateway.settings import CloudPrice
from router import GatePolicy, default_policy

PRICES = Prices(
    cloud=CloudPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0),
    counterfactual=CloudPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0),
    hardware_usd_per_hour=3.6,
)
INFO = RunInfo(dataset="d", model="m", max_tokens=8, seed=0, cloud=None)
GATE = default_policy().gate


def _answered(
    mins: list[float], right: list[bool], cloud: list[bool] | None = None
) -> list[Answered]:
    result = []
    for i, (low, ok) in enumerate(zip(mins, right, strict=True)):
        item = EvalItem(id=f"q{i}", answers=("yes",), match="contains", prompt=f"question {i}?")
        local = LocalAnswer("yes" if ok else "no", (low / 2, low), prompt_tokens=5 + i, seconds=1.0)
        remote = None
        if cloud is not None:
            remote = CloudAnswer("yes" if cloud[i] else "no", 5, 1, seconds=0.5)
        result.append(Answered(item, local, remote))
    return result


def test_threshold_for_a_cloud_share() -> None:
    rows = outcomes(_answered([-0.1, -1, -2, -3, -4, -5], [True] * 3 + [False] * 3), GATE)
    fitted = fit_gate(rows, GATE, "min", Target("cloud_share", 0.5))
    # The 3 lowest (-5, -4, -3) escalate: the threshold is the 4th lowest, -2 (equal passes).
    assert fitted.gate.signal == "min"
    assert fitted.gate.threshold == -2.0
    assert sum(fitted.gate.judge(row.logprobs).escalate for row in rows) == 3
    # Everything else of the gate is kept.
    assert fitted.gate.holdback_tokens == GATE.holdback_tokens
    assert fitted.gate.quantile == GATE.quantile


def test_threshold_for_a_pgr_is_the_first_crossing() -> None:
    # min -0.2 right, -2 wrong, -4 right, -5 wrong: deferring -5 first recovers half the gap.
    rows = outcomes(_answered([-0.2, -2.0, -4.0, -5.0], [True, False, True, False]), GATE)
    fitted = fit_gate(rows, GATE, "min", Target("pgr", 0.5))
    assert fitted.share == pytest.approx(0.25)
    assert fitted.gate.threshold == -4.0
    # PGR 0.8 is first reached at share 0.65, which rounds to 3 items.
    fitted = fit_gate(rows, GATE, "min", Target("pgr", 0.8))
    assert fitted.share == pytest.approx(0.65)
    assert fitted.gate.threshold == -0.2


def test_share_one_stays_a_valid_log_probability() -> None:
    rows = outcomes(_answered([0.0, -1.0], [True, False]), GATE)
    fitted = fit_gate(rows, GATE, "min", Target("cloud_share", 1.0))
    assert fitted.gate.threshold == 0.0
    # "Just above the highest" would be > 0, which the policy refuses; 0.0 escalates -1 only.
    assert [fitted.gate.judge(row.logprobs).escalate for row in rows] == [False, True]


def test_logistic_gate() -> None:
    mins = [-0.1 * i for i in range(20)]
    right = [i < 8 or i == 12 for i in range(20)]
    rows = outcomes(_answered(mins, right), GATE)
    fitted = fit_gate(rows, GATE, "logistic", Target("cloud_share", 0.4))
    assert fitted.gate.signal == "logistic"
    assert fitted.gate.logistic is not None
    assert set(fitted.gate.logistic.weights) == {
        "mean",
        "min",
        "quantile",
        "first_k_min",
        "length",
        "log_prompt_tokens",
    }
    assert 0.0 <= fitted.gate.threshold <= 1.0
    assert sum(row.escalated_by(fitted.gate) for row in rows) == 8


def test_what_cannot_be_fitted_is_an_error() -> None:
    all_right = outcomes(_answered([-1.0, -2.0, -3.0], [True] * 3), GATE)
    with pytest.raises(CalibrationError, match="all right or all wrong"):
        fit_gate(all_right, GATE, "logistic", Target("cloud_share", 0.5))
    no_gap = outcomes(_answered([-1.0, -2.0], [True, False], cloud=[False, True]), GATE)
    with pytest.raises(CalibrationError, match="cloud to beat the local model"):
        fit_gate(no_gap, GATE, "min", Target("pgr", 0.5))
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        Target("pgr", 1.5)


def _dataset(n: int = 40) -> list[Answered]:
    mins = [-0.25 * (i % 17) - 0.01 * i for i in range(n)]
    right = [m > -1.5 if i % 5 else m < -2.0 for i, m in enumerate(mins)]
    return _answered(mins, right)


def test_metrics_are_on_the_held_out_split_only() -> None:
    answered = _dataset()
    result, gate = calibrate(
        answered,
        default_policy(),
        PRICES,
        INFO,
        signal="logistic",
        target=Target("pgr", 0.8),
        fraction=0.5,
    )
    fit_items, held_items = split([a.item for a in answered], fraction=0.5, seed=0)
    held_ids = [item.id for item in held_items]
    assert result["split"]["held_out_ids"] == held_ids
    assert not set(held_ids) & {item.id for item in fit_items}
    assert result["items"] == len(held_ids) == 20
    assert [row["id"] for row in result["per_item"]] == held_ids
    assert result["split"]["calibration"]["items"] == 20
    assert result["fitted"]["signal"] == "logistic"
    assert result["fitted"]["threshold"] == gate.threshold
    held_rows = [a for a in answered if a.item.id in set(held_ids)]
    expected = sum(a.local.text == "yes" for a in held_rows) / len(held_rows)
    assert result["local_accuracy"] == expected
    assert set(result["beats"]) == {"mean", "min", "quantile", "first_k_min", "length"}
    realised = sum(
        gate.judge(a.local.logprobs, prompt_tokens=a.local.prompt_tokens).escalate
        for a in held_rows
    ) / len(held_rows)
    assert result["at_threshold"]["cloud_share"] == realised
    assert any("held-out" in note for note in result["notes"])


def test_the_fit_never_sees_the_held_out_items() -> None:
    answered = _dataset()
    target = Target("cloud_share", 0.3)
    first, gate = calibrate(
        answered, default_policy(), PRICES, INFO, signal="logistic", target=target, fraction=0.5
    )
    held = set(first["split"]["held_out_ids"])
    # Turn every held-out answer around: the fit must not move, the held-out numbers must.
    flipped = [
        a
        if a.item.id not in held
        else Answered(
            a.item,
            LocalAnswer(
                "no" if a.local.text == "yes" else "yes",
                a.local.logprobs,
                a.local.prompt_tokens,
                a.local.seconds,
            ),
            None,
        )
        for a in answered
    ]
    second, gate_again = calibrate(
        flipped, default_policy(), PRICES, INFO, signal="logistic", target=target, fraction=0.5
    )
    assert gate_again == gate
    assert second["fitted"] == first["fitted"]
    assert second["local_accuracy"] == pytest.approx(1 - first["local_accuracy"])
    auroc, again = first["auroc"]["calibrated"], second["auroc"]["calibrated"]
    assert auroc is not None and again is not None
    assert math.isclose(again, 1 - auroc)


def test_single_signal_calibration_compares_against_the_others() -> None:
    result, gate = calibrate(
        _dataset(),
        default_policy(),
        PRICES,
        INFO,
        signal="quantile",
        target=Target("cloud_share", 0.5),
        fraction=0.4,
    )
    assert isinstance(gate, GatePolicy)
    assert gate.signal == "quantile"
    assert result["split"]["calibration"]["items"] == 16
    assert result["items"] == 24
    assert "quantile" not in result["beats"]
    assert set(result["curves"]) >= {"calibrated", "min", "logistic", "length", "oracle"}
