"""Cost and latency of a routing against hand-computed cases."""

from __future__ import annotations

import pytest

from gateway.eval.answering import Answered, CloudAnswer, LocalAnswer
from gateway.eval.costs import Prices, item_cost, latency, routing_summary, usd
from gateway.eval.dataset import EvalItem
from gateway.settings import CloudPrice, LedgerSettings

# 3.6 USD an hour is 0.001 USD per local second.
PRICES = Prices(
    cloud=CloudPrice(input_usd_per_mtok=1.0, output_usd_per_mtok=2.0),
    counterfactual=CloudPrice(input_usd_per_mtok=0.5, output_usd_per_mtok=1.0),
    hardware_usd_per_hour=3.6,
)


def _answered(
    name: str, seconds: float, prompt: int, tokens: int, cloud: CloudAnswer | None
) -> Answered:
    item = EvalItem(id=name, answers=("x",), match="contains", prompt="?")
    local = LocalAnswer("x", (-0.1,) * tokens, prompt_tokens=prompt, seconds=seconds)
    return Answered(item, local, cloud)


A = _answered("a", 2.0, 100, 10, CloudAnswer("x", 120, 30, seconds=1.0))
B = _answered("b", 4.0, 200, 20, CloudAnswer("x", 210, 50, seconds=3.0))


def test_item_cost_by_hand() -> None:
    assert usd(PRICES.cloud, 120, 30) == pytest.approx(180e-6)
    cost = item_cost(A, PRICES)
    assert cost.local_usd == pytest.approx(0.002)
    assert cost.cloud_usd == pytest.approx(180e-6)
    assert not cost.cloud_estimated


def test_without_cloud_usage_the_local_counts_are_priced_as_an_estimate() -> None:
    # 100 prompt and 10 completion tokens at the counterfactual price 0.5 / 1.0 per million.
    for cloud in (None, CloudAnswer("x", None, None, seconds=1.0)):
        cost = item_cost(_answered("c", 2.0, 100, 10, cloud), PRICES)
        assert cost.cloud_usd == pytest.approx(60e-6)
        assert cost.cloud_estimated


def test_latency_per_way() -> None:
    assert latency(A, "local") == 2.0
    assert latency(A, "cloud") == 1.0
    assert latency(A, "local->cloud") == 3.0
    stand_in = _answered("d", 2.0, 100, 10, None)
    assert latency(stand_in, "local") == 2.0
    assert latency(stand_in, "cloud") is None
    assert latency(stand_in, "local->cloud") is None


def test_routing_summary_by_hand() -> None:
    summary = routing_summary(
        [A, B], ["local", "local->cloud"], [True, False], [True, True], PRICES
    )
    # A locally (0.002) + B locally (0.004) and in the cloud (310e-6), over 2 requests.
    assert summary["usd_per_1k"] == pytest.approx((0.002 + 0.004 + 310e-6) / 2 * 1000)
    assert summary["accuracy"] == 1.0
    assert summary["share"] == {"local": 0.5, "cloud": 0.0, "local->cloud": 0.5}
    assert not summary["cloud_usd_estimated"]
    assert summary["latency"]["local"] == {"n": 1, "mean_s": 2.0, "p95_s": 2.0, "measured": True}
    assert summary["latency"]["local->cloud"]["mean_s"] == 7.0
    assert summary["latency"]["cloud"] == {"n": 0, "mean_s": None, "p95_s": None}
    # Latencies 2 and 7: mean 4.5, p95 interpolated 2 + 0.95 * 5.
    assert summary["latency"]["all"]["mean_s"] == 4.5
    assert summary["latency"]["all"]["p95_s"] == pytest.approx(6.75)

    all_cloud = routing_summary([A, B], ["cloud", "cloud"], [True, False], [True, True], PRICES)
    assert all_cloud["usd_per_1k"] == pytest.approx((180e-6 + 310e-6) / 2 * 1000)
    assert all_cloud["latency"]["cloud"]["p95_s"] == pytest.approx(1.0 + 0.95 * 2.0)
    all_local = routing_summary([A, B], ["local", "local"], [True, False], [True, True], PRICES)
    assert all_local["usd_per_1k"] == pytest.approx(3.0)
    assert all_local["accuracy"] == 0.5


def test_unmeasured_cloud_latency_is_reported_as_such() -> None:
    stand_in = [_answered("e", 1.0, 10, 1, None), _answered("f", 3.0, 10, 1, None)]
    summary = routing_summary(
        stand_in, ["local", "local->cloud"], [True, False], [True, True], PRICES
    )
    assert summary["latency"]["local"]["mean_s"] == 1.0
    assert summary["latency"]["local->cloud"] == {
        "n": 1,
        "mean_s": None,
        "p95_s": None,
        "measured": False,
    }
    assert summary["latency"]["all"]["measured"] is False
    assert summary["cloud_usd_estimated"]


def test_routing_summary_checks_its_input() -> None:
    with pytest.raises(ValueError, match="no items"):
        routing_summary([], [], [], [], PRICES)
    with pytest.raises(ValueError, match="one way"):
        routing_summary([A, B], ["local"], [True, False], [True, True], PRICES)


def test_prices_come_from_the_ledger_settings() -> None:
    ledger = LedgerSettings(
        prices={"big": CloudPrice(input_usd_per_mtok=10, output_usd_per_mtok=20)},
        counterfactual_model="other",
        hardware_usd_per_hour=0.5,
    )
    prices = Prices.from_settings(ledger, "big")
    assert prices.cloud.input_usd_per_mtok == 10
    # "other" is not in the table: the default price (gpt-4o-mini's) applies.
    assert prices.counterfactual == ledger.default_price
    assert prices.hardware_usd_per_hour == 0.5
