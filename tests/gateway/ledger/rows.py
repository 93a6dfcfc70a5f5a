"""Hand-built ledger records and rows for the ledger tests."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from gateway.ledger.cost import Costs
from gateway.ledger.record import LedgerRecord
from gateway.ledger.store import StoredRecord

BASE = LedgerRecord(
    request_id="req-0",
    started_at=1_800_000_000.0,
    endpoint="chat",
    model="hybrid",
    stream=False,
    status=200,
    error=None,
    route="local",
    reason="default",
    degraded=None,
    privacy_match=None,
    prompt_tokens=None,
    confidence=None,
    threshold=None,
    local_prompt_tokens=0,
    local_completion_tokens=0,
    local_seconds=0.0,
    local_queue_seconds=0.0,
    cloud_model=None,
    cloud_prompt_tokens=0,
    cloud_completion_tokens=0,
    cloud_seconds=0.0,
    cloud_attempts=0,
    ttft_seconds=None,
    total_seconds=0.0,
)

NO_COSTS = Costs(
    cloud_usd=0.0,
    local_usd=0.0,
    local_energy_wh=None,
    local_gco2e=None,
    counterfactual_usd=0.0,
    savings_usd=0.0,
)


def record(**fields: Any) -> LedgerRecord:
    return replace(BASE, **fields)


def row(costs: Costs = NO_COSTS, **fields: Any) -> StoredRecord:
    return StoredRecord(record(**fields), costs)


def costs(**fields: Any) -> Costs:
    return replace(NO_COSTS, **fields)
