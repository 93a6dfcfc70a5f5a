"""Token entropies in the eval: cached with each answer, scored as signals and features."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.cli import build_parser
from gateway.eval.answering import AnswerCache, Answered, LocalAnswer, answer_all, local_key
from gateway.eval.calibrate import CalibrationError, Target, calibrate, fit_gate
from gateway.eval.costs import Prices
from gateway.eval.dataset import EvalItem
from gateway.eval.report import format_calibration, format_eval
from gateway.eval.run import RunInfo, evaluate
from gateway.eval.scoring import outcomes
from gateway.settings import CloudPrice
from router import default_policy

PRICES = Prices(
    cloud=CloudPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0),
    counterfactual=CloudPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0),
    hardware_usd_per_hour=3.6,
)
INFO = RunInfo(dataset="d", model="m", max_tokens=8, seed=0, cloud=None)
GATE = default_policy().gate
ITEM = EvalItem(id="q0", answers=("yes",), match="contains", prompt="question?")
KEY = local_key(ITEM, model="m", max_tokens=8)


class Answerer:
    def __init__(self, answer: LocalAnswer) -> None:
        self.answer = answer
        self.calls = 0

    async def __call__(self, item: EvalItem) -> LocalAnswer:
        self.calls += 1
        return self.answer


async def _answer(cache_path: Path, answer: LocalAnswer) -> tuple[LocalAnswer, int]:
    local = Answerer(answer)
    [done] = await answer_all(
        [ITEM], local, None, cache=AnswerCache(cache_path), model="m", cloud=None, max_tokens=8
    )
    return done.local, local.calls


def _line(answer: dict[str, object]) -> str:
    return json.dumps({"key": KEY, "answer": answer}) + "\n"


async def test_entropies_are_cached_with_the_answer(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    fresh = LocalAnswer("yes", (-0.5, -1.0), 5, 0.2, entropies=(0.7, 2.25))
    assert await _answer(path, fresh) == (fresh, 1)
    # read back from the file: not answered again, same values
    assert await _answer(path, LocalAnswer("other", (), 0, 0.0)) == (fresh, 0)
    assert json.loads(path.read_text().splitlines()[0])["answer"]["entropies"] == [0.7, 2.25]


async def test_an_answer_cached_before_entropies_is_answered_again(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    old = {"text": "yes", "logprobs": [-0.5, -1.0], "prompt_tokens": 5, "seconds": 0.2}
    path.write_text(_line(old), encoding="utf-8")
    new = LocalAnswer("yes", (-0.5, -1.0), 5, 0.3, entropies=(0.1, 0.2))
    assert await _answer(path, new) == (new, 1)
    # the new line supersedes the old one for every later reader
    assert AnswerCache(path).local(KEY) == new
    assert len(path.read_text().splitlines()) == 2


async def test_unusable_entropies_are_answered_again(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    short = {"text": "y", "logprobs": [-0.5, -1.0], "prompt_tokens": 5, "seconds": 0.2}
    path.write_text(_line({**short, "entropies": [0.1]}), encoding="utf-8")
    new = LocalAnswer("yes", (-0.5,), 5, 0.3, entropies=(0.1,))
    assert await _answer(path, new) == (new, 1)


async def test_an_engine_without_entropies_is_cached_as_such(tmp_path: Path) -> None:
    path = tmp_path / "cache.jsonl"
    answer = LocalAnswer("yes", (-0.5,), 5, 0.3)
    assert await _answer(path, answer) == (answer, 1)
    assert AnswerCache(path).local(KEY) == answer  # "entropies": null, no re-answering
    assert (await _answer(path, answer))[1] == 0


def _answered(n: int = 40, *, entropies: bool = True, long_wrong: bool = False) -> list[Answered]:
    """Right answers have calm tokens (low entropy), wrong ones a torn token; the
    log-probabilities are uninformative (the same for all). With ``long_wrong`` the
    wrong answers' prompts are the long ones."""
    result = []
    for i in range(n):
        right = i % 3 != 0
        torn = 0.3 + 0.01 * i if right else 2.0 + 0.01 * i
        item = EvalItem(id=f"q{i}", answers=("yes",), match="contains", prompt=f"q {i}?")
        local = LocalAnswer(
            "yes" if right else "no",
            (-0.5, -0.25, -1.0),
            prompt_tokens=(4 if right else 40) + i % 7 if long_wrong else 4 + i % 7,
            seconds=0.1,
            entropies=(0.1, torn, 0.2) if entropies else None,
        )
        result.append(Answered(item, local, None))
    return result


def test_entropy_signals_are_reported_when_measured() -> None:
    result = evaluate(_answered(), default_policy(), PRICES, INFO)
    assert result["auroc"]["neg_max_entropy"] == 1.0
    assert result["auroc"]["neg_mean_entropy"] == 1.0
    assert result["auroc"]["min"] == 0.5  # every answer ties
    table = format_eval(result)
    assert "neg_first_k_max_entropy" in table
    without = evaluate(_answered(entropies=False), default_policy(), PRICES, INFO)
    assert "neg_max_entropy" not in without["auroc"]
    assert "neg_max_entropy" not in without["curves"]
    assert "neg_" not in format_eval(without)


def test_calibrating_an_entropy_signal() -> None:
    rows = outcomes(_answered(12), GATE)
    fitted = fit_gate(rows, GATE, "neg_max_entropy", Target("cloud_share", 0.25))
    # The 3 lowest of -max entropy (-2.09, -2.06, -2.03) escalate; the 4th lowest is -2.0.
    assert fitted.gate.signal == "neg_max_entropy"
    assert fitted.gate.threshold == pytest.approx(-2.0)
    assert sum(row.escalated_by(fitted.gate) for row in rows) == 3


def test_the_logistic_model_weighs_the_chosen_features() -> None:
    rows = outcomes(_answered(), GATE)
    every = fit_gate(rows, GATE, "logistic", Target("cloud_share", 0.3))
    assert every.gate.logistic is not None
    assert {"neg_mean_entropy", "neg_max_entropy", "min", "length"} <= set(
        every.gate.logistic.weights
    )
    chosen = fit_gate(
        rows, GATE, "logistic", Target("cloud_share", 0.3), features=["min", "neg_max_entropy"]
    )
    assert chosen.gate.logistic is not None
    assert list(chosen.gate.logistic.weights) == ["min", "neg_max_entropy"]
    assert chosen.gate.logistic.weights["neg_max_entropy"] > 0
    logprobs_only = fit_gate(
        rows, GATE, "logistic", Target("cloud_share", 0.3), features=["min", "mean"]
    )
    assert logprobs_only.gate.logistic is not None
    assert not logprobs_only.gate.needs_entropies


def test_entropy_features_need_entropies() -> None:
    rows = outcomes(_answered(entropies=False), GATE)
    with pytest.raises(CalibrationError, match="need the tokens' entropies"):
        fit_gate(rows, GATE, "neg_mean_entropy", Target("cloud_share", 0.3))
    with pytest.raises(CalibrationError, match="need the tokens' entropies"):
        fit_gate(rows, GATE, "logistic", Target("cloud_share", 0.3), features=["neg_max_entropy"])
    with pytest.raises(CalibrationError, match="unknown features"):
        fit_gate(rows, GATE, "logistic", Target("cloud_share", 0.3), features=["loudness"])
    # Without entropies the logistic model falls back to what the answers have.
    fitted = fit_gate(rows, GATE, "logistic", Target("cloud_share", 0.3))
    assert fitted.gate.logistic is not None
    assert not fitted.gate.needs_entropies


def _calibrate(answered: list[Answered], features: list[str]) -> tuple[dict[str, object], bool]:
    result, gate = calibrate(
        answered,
        default_policy(),
        PRICES,
        INFO,
        signal="logistic",
        target=Target("cloud_share", 0.3),
        fraction=0.5,
        features=features,
    )
    return result, gate.needs_entropies


def test_calibrated_gate_is_scored_as_the_gateway_scores_it() -> None:
    """The held-out score of the fitted gate uses the prompt's length and the
    entropies, as the gateway would: it ranks as the fitted model does."""
    result, needs_entropies = _calibrate(_answered(60), ["log_prompt_tokens", "neg_max_entropy"])
    assert needs_entropies
    assert result["fitted"]["features"] == ["log_prompt_tokens", "neg_max_entropy"]
    assert result["auroc"]["calibrated"] == result["auroc"]["logistic"] == 1.0
    assert "neg_max_entropy" in result["beats"]
    assert "neg_max_entropy" in format_calibration(result)
    # A gate on the prompt's length alone: scored without it, every item would tie (0.5).
    result, needs_entropies = _calibrate(
        _answered(60, entropies=False, long_wrong=True), ["log_prompt_tokens"]
    )
    assert not needs_entropies
    assert result["auroc"]["calibrated"] == 1.0


def test_features_argument() -> None:
    parser = build_parser()
    args = parser.parse_args(["calibrate", "d", "--features", "min, neg_max_entropy"])
    assert args.features == ("min", "neg_max_entropy")
    assert parser.parse_args(["calibrate", "d"]).features is None
    for bad in ("min,loudness", "min,min", ","):
        with pytest.raises(SystemExit):
            parser.parse_args(["calibrate", "d", "--features", bad])
