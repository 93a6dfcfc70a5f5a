from __future__ import annotations

import pytest

from gateway.ledger.cost import price_costs
from gateway.settings import CloudPrice, LedgerSettings
from tests.gateway.ledger.rows import record

# $3.60 an hour = $0.001 per second of local compute: easy to check by hand.
SETTINGS = LedgerSettings(hardware_usd_per_hour=3.6)


def test_local_answer_saves_the_cloud_price_minus_the_machine_time() -> None:
    local = record(
        route="local", local_prompt_tokens=1000, local_completion_tokens=500, local_seconds=2.0
    )
    costs = price_costs(local, SETTINGS, "gpt-4o")
    # gpt-4o: 1000 x $2.50/M + 500 x $10.00/M = $0.0025 + $0.005
    assert costs.counterfactual_usd == pytest.approx(0.0075)
    assert costs.cloud_usd == 0
    assert costs.local_usd == pytest.approx(0.002)
    assert costs.savings_usd == pytest.approx(0.0055)
    assert costs.local_energy_wh is None
    assert costs.local_gco2e is None


def test_cloud_answer_counterfactual_is_its_own_bill() -> None:
    cloud = record(
        route="cloud",
        cloud_model="gpt-4o",
        cloud_prompt_tokens=1000,
        cloud_completion_tokens=500,
        cloud_seconds=1.5,
    )
    costs = price_costs(cloud, SETTINGS, "gpt-4o-mini")
    assert costs.cloud_usd == pytest.approx(0.0075)
    assert costs.counterfactual_usd == costs.cloud_usd
    assert costs.local_usd == 0
    assert costs.savings_usd == 0


def test_escalated_request_paid_for_both_attempts() -> None:
    escalated = record(
        route="local->cloud",
        local_prompt_tokens=900,
        local_completion_tokens=30,
        local_seconds=2.0,
        cloud_model="gpt-4o-mini",
        cloud_prompt_tokens=1000,
        cloud_completion_tokens=200,
    )
    costs = price_costs(escalated, SETTINGS, "gpt-4o-mini")
    # gpt-4o-mini: 1000 x $0.15/M + 200 x $0.60/M = $0.00015 + $0.00012
    assert costs.cloud_usd == pytest.approx(0.00027)
    assert costs.counterfactual_usd == pytest.approx(0.00027)
    assert costs.local_usd == pytest.approx(0.002)
    assert costs.savings_usd == pytest.approx(-0.002)
    assert costs.savings_usd < 0


def test_unknown_cloud_model_uses_the_default_price() -> None:
    cloud = record(
        route="cloud", cloud_model="my-model", cloud_prompt_tokens=2000, cloud_completion_tokens=0
    )
    default = price_costs(cloud, SETTINGS, "gpt-4o")
    assert default.cloud_usd == pytest.approx(2000 * 0.15 / 1e6)
    custom = LedgerSettings(default_price=CloudPrice(input_usd_per_mtok=1, output_usd_per_mtok=2))
    assert price_costs(cloud, custom, "gpt-4o").cloud_usd == pytest.approx(0.002)


def test_record_without_cloud_model_is_priced_at_the_configured_one() -> None:
    cloud = record(route="cloud", cloud_prompt_tokens=1_000_000, cloud_completion_tokens=0)
    assert price_costs(cloud, SETTINGS, "gpt-4.1").cloud_usd == pytest.approx(2.0)


def test_energy_and_co2e_only_when_power_is_set() -> None:
    local = record(route="local", local_seconds=2.0)
    powered = LedgerSettings(power_watts=30, grid_gco2e_per_kwh=400)
    costs = price_costs(local, powered, "gpt-4o-mini")
    # 30 W x 2 s = 60 J = 1/60 Wh; x 400 g/kWh
    assert costs.local_energy_wh == pytest.approx(1 / 60)
    assert costs.local_gco2e == pytest.approx(1 / 60 / 1000 * 400)
    unpowered = price_costs(local, LedgerSettings(), "gpt-4o-mini")
    assert unpowered.local_energy_wh is None
    assert unpowered.local_gco2e is None


def test_counterfactual_model_overrides_the_cloud_model() -> None:
    local = record(route="local", local_prompt_tokens=1000, local_completion_tokens=1000)
    override = LedgerSettings(hardware_usd_per_hour=0, counterfactual_model="gpt-4.1")
    costs = price_costs(local, override, "gpt-4o-mini")
    # gpt-4.1: $2/M in + $8/M out
    assert costs.counterfactual_usd == pytest.approx(0.010)
    assert costs.savings_usd == pytest.approx(0.010)


def test_request_refused_before_any_work_costs_and_saves_nothing() -> None:
    refused = record(route=None, reason=None, status=400, error="invalid_request_error")
    costs = price_costs(refused, SETTINGS, "gpt-4o-mini")
    assert (costs.cloud_usd, costs.local_usd, costs.counterfactual_usd) == (0, 0, 0)
    assert costs.savings_usd == 0
