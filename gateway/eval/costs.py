"""Cost and latency of a routing, from the answers measured in an eval run.

A routing sends each item one of three ways, as the gateway would:

- ``local``: answered locally, the answer stands;
- ``cloud``: sent to the cloud before generation (a rule, or all-cloud);
- ``local->cloud``: answered locally, then escalated by the gate, so it pays
  for both and waits for both.

Prices are the ledger's (:mod:`gateway.ledger.cost`): local work costs its
measured seconds at ``GATEWAY_LEDGER__HARDWARE_USD_PER_HOUR``; cloud work
costs its tokens at the cloud model's price. With a real cloud the tokens are
the cloud's own usage counts. With the gold answer standing in, or a cloud
that reported no usage, they are the local answer's prompt and completion
token counts at the counterfactual model's price, as the ledger's all-cloud
counterfactual does: an estimate, and flagged as one.

Latency is the measured wall time: local generation, cloud call, or their sum
for an escalation (the gateway answers after both). Without a real cloud,
every latency that includes a cloud call is ``None``: not measured.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from gateway.eval.answering import Answered
from gateway.ledger.cost import price_of
from gateway.settings import CloudPrice, LedgerSettings
from router import interpolated_quantile

Way = Literal["local", "cloud", "local->cloud"]
WAYS: tuple[Way, ...] = ("local", "cloud", "local->cloud")
_PER_MTOK = 1_000_000
_SECONDS_PER_HOUR = 3600.0


@dataclass(frozen=True)
class Prices:
    #: prices the cloud's own usage
    cloud: CloudPrice
    #: prices token counts estimated from the local answer (no usage, or gold stand-in)
    counterfactual: CloudPrice
    hardware_usd_per_hour: float

    @classmethod
    def from_settings(cls, ledger: LedgerSettings, cloud_model: str) -> Prices:
        return cls(
            cloud=price_of(cloud_model, ledger),
            counterfactual=price_of(ledger.counterfactual_model or cloud_model, ledger),
            hardware_usd_per_hour=ledger.hardware_usd_per_hour,
        )


@dataclass(frozen=True)
class ItemCost:
    local_usd: float
    cloud_usd: float
    #: True when cloud_usd prices the local token counts, not the cloud's usage
    cloud_estimated: bool


def usd(price: CloudPrice, prompt_tokens: int, completion_tokens: int) -> float:
    """The ledger's formula: tokens times USD per million tokens."""
    return (
        prompt_tokens * price.input_usd_per_mtok + completion_tokens * price.output_usd_per_mtok
    ) / _PER_MTOK


def item_cost(answered: Answered, prices: Prices) -> ItemCost:
    local = answered.local
    local_usd = local.seconds * prices.hardware_usd_per_hour / _SECONDS_PER_HOUR
    cloud = answered.cloud
    if (
        cloud is not None
        and cloud.prompt_tokens is not None
        and cloud.completion_tokens is not None
    ):
        return ItemCost(
            local_usd, usd(prices.cloud, cloud.prompt_tokens, cloud.completion_tokens), False
        )
    estimate = usd(prices.counterfactual, local.prompt_tokens, len(local.logprobs))
    return ItemCost(local_usd, estimate, True)


def latency(answered: Answered, way: Way) -> float | None:
    """Seconds until the gateway could answer this item this way; None if not measured."""
    cloud = None if answered.cloud is None else answered.cloud.seconds
    if way == "local":
        return answered.local.seconds
    if cloud is None:
        return None
    return cloud if way == "cloud" else answered.local.seconds + cloud


def _stats(values: Sequence[float | None]) -> dict[str, Any]:
    """Mean and p95 (linear interpolation) of measured values; null when any is unmeasured."""
    if not values:
        return {"n": 0, "mean_s": None, "p95_s": None}
    if any(value is None for value in values):
        return {"n": len(values), "mean_s": None, "p95_s": None, "measured": False}
    measured = [value for value in values if value is not None]
    return {
        "n": len(measured),
        "mean_s": math.fsum(measured) / len(measured),
        "p95_s": interpolated_quantile(measured, 0.95),
        "measured": True,
    }


def routing_summary(
    answered: Sequence[Answered],
    ways: Sequence[Way],
    local_correct: Sequence[bool],
    cloud_correct: Sequence[bool],
    prices: Prices,
) -> dict[str, Any]:
    """Accuracy, share per way, expected USD per 1,000 requests and latency of one routing."""
    if not answered:
        raise ValueError("no items")
    if not len(answered) == len(ways) == len(local_correct) == len(cloud_correct):
        raise ValueError("one way and one verdict per item")
    n = len(answered)
    total = 0.0
    estimated = False
    right = 0
    for item, way, local_ok, cloud_ok in zip(
        answered, ways, local_correct, cloud_correct, strict=True
    ):
        cost = item_cost(item, prices)
        if way != "cloud":
            total += cost.local_usd
        if way != "local":
            total += cost.cloud_usd
            estimated = estimated or cost.cloud_estimated
        right += local_ok if way == "local" else cloud_ok
    per_way = {
        way: _stats([latency(a, w) for a, w in zip(answered, ways, strict=True) if w == way])
        for way in WAYS
    }
    return {
        "accuracy": right / n,
        "share": {way: sum(1 for w in ways if w == way) / n for way in WAYS},
        "usd_per_1k": total / n * 1000,
        "cloud_usd_estimated": estimated,
        "latency": {
            **per_way,
            "all": _stats([latency(a, w) for a, w in zip(answered, ways, strict=True)]),
        },
    }
