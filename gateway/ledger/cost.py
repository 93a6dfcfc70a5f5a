"""What one request cost, and what sending it to the cloud would have cost.

Only ``cloud_usd`` is measured: the cloud's own token counts at its list
price. The local cost, energy and CO2e are estimates from configured inputs
(the machine's hourly cost, its power draw, the grid's carbon intensity)
apportioned by the seconds the local model computed for the request.

The all-cloud counterfactual prices a local answer's prompt and completion
tokens, counted by the local tokenizer, at the cloud price: the cloud's
tokenizer would count somewhat differently, so it is an estimate too.
"""

from __future__ import annotations

from gateway.ledger.record import LedgerRecord
from gateway.settings import CloudPrice, LedgerSettings
from local_model.values import value

_PER_MTOK = 1_000_000
_SECONDS_PER_HOUR = 3600.0


@value
class Costs:
    #: the record's real cloud usage at the cloud model's price
    cloud_usd: float
    #: estimate: local compute seconds at the configured hourly cost of the machine
    local_usd: float
    #: estimate: power draw x local compute seconds; None when no power is configured
    local_energy_wh: float | None
    #: estimate: energy x grid carbon intensity; None when no power is configured
    local_gco2e: float | None
    #: what sending this request to the cloud would have cost (0 if refused before any work)
    counterfactual_usd: float
    #: counterfactual - (cloud + local); negative for an escalated request, which paid twice
    savings_usd: float


def price_of(model: str, settings: LedgerSettings) -> CloudPrice:
    """The configured price of a cloud model; ``default_price`` for one not in the table."""
    return settings.prices.get(model, settings.default_price)


def _usd(price: CloudPrice, prompt_tokens: int, completion_tokens: int) -> float:
    return (
        prompt_tokens * price.input_usd_per_mtok + completion_tokens * price.output_usd_per_mtok
    ) / _PER_MTOK


def price_costs(record: LedgerRecord, settings: LedgerSettings, cloud_model: str) -> Costs:
    """The costs of one record at the configured prices.

    ``cloud_model`` is the configured cloud model (``GATEWAY_CLOUD__MODEL``): it
    prices the record's cloud tokens when the record names no cloud model, and
    the counterfactual when ``counterfactual_model`` is unset.
    """
    cloud_usd = _usd(
        price_of(record.cloud_model or cloud_model, settings),
        record.cloud_prompt_tokens,
        record.cloud_completion_tokens,
    )
    local_usd = record.local_seconds * settings.hardware_usd_per_hour / _SECONDS_PER_HOUR
    energy_wh: float | None = None
    gco2e: float | None = None
    if settings.power_watts is not None:
        energy_wh = settings.power_watts * record.local_seconds / _SECONDS_PER_HOUR
        gco2e = energy_wh / 1000 * settings.grid_gco2e_per_kwh
    if record.route == "local":
        counterfactual = _usd(
            price_of(settings.counterfactual_model or cloud_model, settings),
            record.local_prompt_tokens,
            record.local_completion_tokens,
        )
    elif record.route is None:
        # Refused before routing: no model would have run in either world.
        counterfactual = 0.0
    else:
        # "cloud" and "local->cloud": the cloud answered, so its bill is what all-cloud costs.
        counterfactual = cloud_usd
    return Costs(
        cloud_usd=cloud_usd,
        local_usd=local_usd,
        local_energy_wh=energy_wh,
        local_gco2e=gco2e,
        counterfactual_usd=counterfactual,
        savings_usd=counterfactual - (cloud_usd + local_usd),
    )
