from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.ledger.summary import ESTIMATES_NOTE, parse_bound, parse_since, percentile, summarize
from tests.gateway.ledger.rows import costs, row

NOW = 1_800_000_000.0

ROWS = [
    row(
        costs(local_usd=0.001, counterfactual_usd=0.003, savings_usd=0.002),
        route="local",
        reason="default",
        confidence=-0.5,
        ttft_seconds=0.1,
        total_seconds=1.0,
        local_prompt_tokens=10,
        local_completion_tokens=20,
    ),
    row(
        costs(local_usd=0.002, counterfactual_usd=0.004, savings_usd=0.002),
        route="local",
        reason="privacy-floor",
        ttft_seconds=0.2,
        total_seconds=2.0,
        local_prompt_tokens=30,
        local_completion_tokens=40,
    ),
    row(
        costs(cloud_usd=0.01, local_usd=0.003, counterfactual_usd=0.01, savings_usd=-0.003),
        route="local->cloud",
        reason="default",
        confidence=-4.0,
        ttft_seconds=0.5,
        total_seconds=3.0,
        local_prompt_tokens=5,
        local_completion_tokens=1,
        cloud_prompt_tokens=100,
        cloud_completion_tokens=50,
    ),
    row(
        costs(cloud_usd=0.02, counterfactual_usd=0.02),
        route="cloud",
        reason="wants-cloud",
        ttft_seconds=0.3,
        total_seconds=4.0,
        cloud_prompt_tokens=200,
        cloud_completion_tokens=60,
    ),
    row(route=None, reason=None, status=400, error="invalid_request_error", total_seconds=0.01),
    row(
        costs(local_usd=0.004, counterfactual_usd=0.001, savings_usd=-0.003),
        route="local",
        reason="default",
        degraded="cloud-unavailable",
        confidence=-3.5,
        ttft_seconds=0.4,
        total_seconds=5.0,
        status=200,
    ),
]


def test_summary_of_hand_built_rows() -> None:
    summary = summarize(ROWS, since=NOW - 3600, until=None)
    assert summary["since"] == NOW - 3600
    assert summary["until"] is None
    assert summary["requests"] == 6
    assert summary["by_route"] == {"local": 3, "cloud": 1, "local->cloud": 1, "none": 1}
    assert summary["by_reason"] == {
        "default": 3,
        "none": 1,
        "privacy-floor": 1,
        "wants-cloud": 1,
    }
    assert summary["by_status"] == {"200": 5, "400": 1}
    # judged locally: the three with a confidence; one of them escalated
    assert (summary["judged_locally"], summary["escalated"]) == (3, 1)
    assert summary["escalation_rate"] == pytest.approx(1 / 3)
    assert summary["degraded"] == 1
    assert summary["latency"]["local"] == {
        "count": 3,
        "ttft_seconds": {"p50": 0.2, "p95": 0.4, "p99": 0.4},
        "total_seconds": {"p50": 2.0, "p95": 5.0, "p99": 5.0},
    }
    assert summary["latency"]["none"]["ttft_seconds"] == {"p50": None, "p95": None, "p99": None}
    assert summary["latency"]["cloud"]["total_seconds"]["p50"] == 4.0
    assert summary["tokens"] == {
        "local_prompt": 45,
        "local_completion": 61,
        "cloud_prompt": 300,
        "cloud_completion": 110,
    }
    cost = summary["cost_usd"]
    assert cost["cloud"] == pytest.approx(0.03)
    assert cost["local_estimate"] == pytest.approx(0.010)
    assert cost["total"] == pytest.approx(0.04)
    assert cost["all_cloud_counterfactual"] == pytest.approx(0.038)
    assert cost["savings"] == pytest.approx(-0.002)
    assert cost["savings"] == pytest.approx(cost["all_cloud_counterfactual"] - cost["total"])
    assert summary["energy"] is None
    assert summary["estimates_note"] == ESTIMATES_NOTE


def test_energy_is_summed_when_estimated() -> None:
    rows = [
        row(costs(local_energy_wh=0.5, local_gco2e=0.2)),
        row(costs(local_energy_wh=0.25, local_gco2e=0.1)),
        row(),  # written before a power draw was configured
    ]
    energy = summarize(rows, since=None, until=None)["energy"]
    assert energy == {"wh": 0.75, "gco2e": pytest.approx(0.3), "requests": 2}


def test_empty_summary() -> None:
    summary = summarize([], since=None, until=None)
    assert summary["requests"] == 0
    assert summary["by_route"] == {"local": 0, "cloud": 0, "local->cloud": 0, "none": 0}
    assert summary["escalation_rate"] is None
    assert summary["latency"] == {}
    assert summary["cost_usd"]["total"] == 0


def test_nearest_rank_percentiles() -> None:
    ten = [float(v) for v in range(10, 0, -1)]  # unsorted on purpose
    assert [percentile(ten, p) for p in (50, 95, 99, 100)] == [5.0, 10.0, 10.0, 10.0]
    hundred = [float(v) for v in range(1, 101)]
    assert [percentile(hundred, p) for p in (50, 95, 99)] == [50.0, 95.0, 99.0]
    assert percentile([7.0], 50) == 7.0
    assert percentile([], 50) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("24h", NOW - 86400),
        ("30m", NOW - 1800),
        ("7d", NOW - 7 * 86400),
        ("90s", NOW - 90),
        ("1.5h", NOW - 5400),
        (" 2W ", NOW - 14 * 86400),
        ("0s", NOW),
        ("2026-01-31T12:00:00Z", datetime(2026, 1, 31, 12, tzinfo=UTC).timestamp()),
        ("2026-01-31T12:00:00", datetime(2026, 1, 31, 12, tzinfo=UTC).timestamp()),
        ("2026-01-31T14:00:00+02:00", datetime(2026, 1, 31, 12, tzinfo=UTC).timestamp()),
        ("2026-01-31", datetime(2026, 1, 31, tzinfo=UTC).timestamp()),
    ],
)
def test_parse_since(text: str, expected: float) -> None:
    assert parse_since(text, NOW) == expected


@pytest.mark.parametrize("text", ["", "yesterday", "24", "24x", "-5h", "h", "2026-13-01"])
def test_parse_since_refuses_anything_else(text: str) -> None:
    with pytest.raises(ValueError, match="duration such as 90s, 30m, 24h or 7d"):
        parse_since(text, NOW)


def test_parse_bound_all_means_unbounded() -> None:
    assert parse_bound(None, NOW) is None
    assert parse_bound("all", NOW) is None
    assert parse_bound("1h", NOW) == NOW - 3600
