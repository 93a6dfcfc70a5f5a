"""The eval pipeline on fake answerers: the numbers by hand, the cache, the cloud in the loop."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.eval.answering import (
    AnswerCache,
    Answered,
    CloudAnswer,
    LocalAnswer,
    answer_all,
)
from gateway.eval.costs import Prices
from gateway.eval.dataset import EvalItem, load_jsonl
from gateway.eval.report import format_eval
from gateway.eval.run import CLOUD_STAND_IN, PLOTTED, RunInfo, evaluate, write_outputs
from gateway.eval.scoring import cross_fitted_scores, outcomes
from gateway.settings import CloudPrice
from router import default_policy

# Right, wrong, right, wrong; min log-probs -0.2, -2.0, -4.0, -5.0.
LOCAL = {
    "a": LocalAnswer("Paris.", (-0.1, -0.2), prompt_tokens=10, seconds=1.0),
    "b": LocalAnswer("Lyon", (-2.0, -0.5), prompt_tokens=30, seconds=2.0),
    "c": LocalAnswer("It is 4", (-0.3, -4.0), prompt_tokens=20, seconds=3.0),
    "d": LocalAnswer("blue", (-5.0,), prompt_tokens=40, seconds=4.0),
}
# The cloud gets b wrong too.
CLOUD = {
    "a": CloudAnswer("Paris", 12, 2, seconds=0.5),
    "b": CloudAnswer("Kyoto", 12, 2, seconds=0.5),
    "c": CloudAnswer("4", 12, 1, seconds=0.5),
    "d": CloudAnswer("green", 12, 1, seconds=1.5),
}
DATASET = [
    {"id": "a", "prompt": "Capital of France?", "answers": ["Paris"]},
    {"id": "b", "prompt": "Capital of Japan?", "answers": ["Tokyo"]},
    {"id": "c", "prompt": "2+2?", "answers": ["4"], "match": "number"},
    {
        "id": "d",
        "messages": [{"role": "user", "content": "Colour of grass?"}],
        "answers": ["green"],
    },
]
PRICES = Prices(
    cloud=CloudPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0),
    counterfactual=CloudPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0),
    hardware_usd_per_hour=3.6,
)
STAND_IN = RunInfo(dataset="data.jsonl", model="fake.gguf", max_tokens=8, seed=0, cloud=None)


class FakeLocal:
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def __call__(self, item: EvalItem) -> LocalAnswer:
        self.calls.append(item.id)
        return LOCAL[item.id]


class FakeCloudModel:
    def __init__(self, fail_on: str | None = None) -> None:
        self.calls: list[str] = []
        self.fail_on = fail_on

    async def __call__(self, item: EvalItem) -> CloudAnswer:
        if item.id == self.fail_on:
            raise RuntimeError("cloud down")
        self.calls.append(item.id)
        return CLOUD[item.id]


def _items(tmp_path: Path) -> list[EvalItem]:
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in DATASET), encoding="utf-8")
    return load_jsonl(path)


def _answered(items: list[EvalItem], cloud: bool) -> list[Answered]:
    return [Answered(i, LOCAL[i.id], CLOUD[i.id] if cloud else None) for i in items]


def test_stand_in_numbers_by_hand(tmp_path: Path) -> None:
    result = evaluate(_answered(_items(tmp_path), cloud=False), default_policy(), PRICES, STAND_IN)
    assert result["cloud_is_gold_stand_in"] is True
    assert CLOUD_STAND_IN in result["notes"]
    assert result["local_accuracy"] == 0.5
    assert result["cloud_accuracy"] == 1.0
    # Right answers score -0.2 and -4.0, wrong ones -2.0 and -5.0: 3 of 4 pairs ordered.
    assert result["auroc"]["min"] == 0.75
    assert result["auroc"]["policy"] == 0.75

    # Gate on min: deferring d, c, b, a gives PGR 0, .5, .5, 1, 1 at shares 0 .. 1.
    curves = result["curves"]
    assert curves["policy"]["apgr"] == pytest.approx(0.625)
    assert curves["policy"]["cpt50"] == pytest.approx(0.25)
    assert curves["policy"]["cpt80"] == pytest.approx(0.65)
    assert curves["oracle"]["apgr"] == pytest.approx(0.75)
    assert curves["random"]["apgr"] == pytest.approx(0.5)
    # (0.625 - 0.5) / (0.75 - 0.5), which is 2 * AUROC - 1.
    assert curves["policy"]["gain"] == pytest.approx(0.5)
    assert curves["oracle"]["gain"] == pytest.approx(1.0)

    # The default threshold -3.0 escalates c and d: a right, b wrong, c and d by the gold.
    assert result["gate"]["cloud_share_at_threshold"] == 0.5
    gate = result["routing"]["gate"]
    assert gate["accuracy"] == 0.75
    assert gate["share"] == {"local": 0.5, "cloud": 0.0, "local->cloud": 0.5}
    assert gate["latency"]["local"]["mean_s"] == 1.5
    assert gate["latency"]["local->cloud"]["mean_s"] is None  # the stand-in has no latency
    assert gate["cloud_usd_estimated"] is True
    # No rule of the default policy matches these prompts: every item meets the gate.
    assert result["rules"] == {"local": 0.0, "cloud": 0.0, "local_then_check": 1.0}
    assert result["routing"]["policy"] == gate
    # Local: 10 s at 0.001 USD/s over 4 items; c and d add 20+4 and 40+1 tokens at 1/2 USD/M.
    expected = (0.010 + (20 * 1 + 2 * 2 + 40 * 1 + 1 * 2) / 1e6) / 4 * 1000
    assert gate["usd_per_1k"] == pytest.approx(expected)

    table = format_eval(result)
    assert table.startswith(f"*** {CLOUD_STAND_IN}")
    assert table.rstrip().endswith(f"{CLOUD_STAND_IN} ***")


def test_cloud_in_the_loop_is_scored_and_measured(tmp_path: Path) -> None:
    info = RunInfo("data.jsonl", "fake.gguf", 8, 0, cloud="big at https://cloud.test/v1")
    result = evaluate(_answered(_items(tmp_path), cloud=True), default_policy(), PRICES, info)
    assert result["cloud_is_gold_stand_in"] is False
    assert CLOUD_STAND_IN not in result["notes"]
    assert result["notes"][0] == "cloud answers from big at https://cloud.test/v1"
    assert result["cloud_accuracy"] == 0.75
    assert [row["cloud_correct"] for row in result["per_item"]] == [True, False, True, True]
    gate = result["routing"]["gate"]
    assert gate["cloud_usd_estimated"] is False
    # c escalates after 3 s locally plus 0.5 s, d after 4 s plus 1.5 s.
    assert gate["latency"]["local->cloud"]["mean_s"] == pytest.approx(4.5)
    assert result["routing"]["all_cloud"]["latency"]["all"]["mean_s"] == pytest.approx(0.75)
    assert "not measured" not in format_eval(result)


def test_logistic_is_cross_fitted(tmp_path: Path) -> None:
    items = [
        EvalItem(id=f"q{i}", answers=("yes",), match="contains", prompt="?") for i in range(20)
    ]
    answered = [
        Answered(
            item,
            LocalAnswer(
                "yes" if i % 3 else "no", (-0.1 * (i % 7), -0.05 * i), prompt_tokens=5, seconds=1.0
            ),
            None,
        )
        for i, item in enumerate(items)
    ]
    rows = outcomes(answered, default_policy().gate)
    scores = cross_fitted_scores(rows, k=5, seed=0)
    assert scores is not None
    # Flipping one item's label changes the models of the other folds, never its own score.
    for flip in (0, 7, 13):
        changed = list(answered)
        local = answered[flip].local
        text = "no" if local.text == "yes" else "yes"
        changed[flip] = Answered(
            answered[flip].item,
            LocalAnswer(text, local.logprobs, local.prompt_tokens, local.seconds),
            None,
        )
        again = cross_fitted_scores(outcomes(changed, default_policy().gate), k=5, seed=0)
        assert again is not None
        assert again[flip] == scores[flip]
        assert again != scores


async def test_cache_resume_and_cloud_cache(tmp_path: Path) -> None:
    items = _items(tmp_path)
    cache_path = tmp_path / "out" / "cache.jsonl"
    local, cloud = FakeLocal(), FakeCloudModel()
    keys = {"model": "m", "cloud": "big at x", "max_tokens": 8}
    first = await answer_all(items[:2], local, cloud, cache=AnswerCache(cache_path), **keys)
    assert local.calls == cloud.calls == ["a", "b"]
    with cache_path.open("a", encoding="utf-8") as cache:
        cache.write('{"key": "[\\"local\\", \\"c\\", ')  # killed mid-write

    local, cloud = FakeLocal(), FakeCloudModel()
    second = await answer_all(items, local, cloud, cache=AnswerCache(cache_path), **keys)
    assert local.calls == cloud.calls == ["c", "d"]
    assert second[:2] == first

    # Another cloud is another cache key; the local answers are still cached.
    local, cloud = FakeLocal(), FakeCloudModel()
    await answer_all(
        items, local, cloud, cache=AnswerCache(cache_path), model="m", cloud="other", max_tokens=8
    )
    assert local.calls == []
    assert cloud.calls == ["a", "b", "c", "d"]

    # Another max_tokens is another key for both.
    local = FakeLocal()
    await answer_all(
        items[:1], local, None, cache=AnswerCache(cache_path), model="m", cloud=None, max_tokens=9
    )
    assert local.calls == ["a"]


async def test_an_edited_item_is_answered_again(tmp_path: Path) -> None:
    items = _items(tmp_path)
    cache = AnswerCache(tmp_path / "cache.jsonl")
    await answer_all(items[:1], FakeLocal(), None, cache=cache, model="m", cloud=None, max_tokens=8)
    edited = EvalItem(id="a", answers=("Paris",), match="contains", prompt="Capital of France??")
    local = FakeLocal()
    await answer_all([edited], local, None, cache=cache, model="m", cloud=None, max_tokens=8)
    assert local.calls == ["a"]


async def test_a_failing_cloud_keeps_what_was_answered(tmp_path: Path) -> None:
    items = _items(tmp_path)
    cache_path = tmp_path / "cache.jsonl"
    keys = {"model": "m", "cloud": "big", "max_tokens": 8}
    with pytest.raises(RuntimeError, match="cloud down"):
        await answer_all(
            items, FakeLocal(), FakeCloudModel(fail_on="c"), cache=AnswerCache(cache_path), **keys
        )
    local, cloud = FakeLocal(), FakeCloudModel()
    await answer_all(items, local, cloud, cache=AnswerCache(cache_path), **keys)
    assert local.calls == ["d"]  # c's local answer was cached before its cloud call failed
    assert cloud.calls == ["c", "d"]


def test_outputs_json_and_png(tmp_path: Path) -> None:
    result = evaluate(_answered(_items(tmp_path), cloud=False), default_policy(), PRICES, STAND_IN)
    outputs = write_outputs(result, tmp_path / "out", "eval", plotted=PLOTTED, title="curves")
    assert json.loads(outputs.json_path.read_text(encoding="utf-8")) == result
    png = outputs.png_path.read_bytes()
    assert len(png) > 1000
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
