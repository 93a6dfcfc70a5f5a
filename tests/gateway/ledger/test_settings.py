from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import LedgerSettings, Settings

README = Path(__file__).resolve().parents[3] / "README.md"


def test_ledger_settings_from_nested_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_LEDGER__PATH", "/var/lib/gw/ledger.db")
    monkeypatch.setenv(
        "GATEWAY_LEDGER__PRICES",
        '{"my-model": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 2}}',
    )
    monkeypatch.setenv(
        "GATEWAY_LEDGER__DEFAULT_PRICE", '{"input_usd_per_mtok": 0.5, "output_usd_per_mtok": 9}'
    )
    monkeypatch.setenv("GATEWAY_LEDGER__POWER_WATTS", "35")
    ledger = Settings().ledger
    assert ledger.path == Path("/var/lib/gw/ledger.db")
    assert set(ledger.prices) == {"my-model"}  # replaces the built-in table
    assert ledger.prices["my-model"].output_usd_per_mtok == 2
    assert ledger.default_price.output_usd_per_mtok == 9
    assert ledger.default_price.input_usd_per_mtok == 0.5
    assert ledger.power_watts == 35


def test_bad_ledger_values_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "GATEWAY_LEDGER__PRICES", '{"m": {"input_usd_per_mtok": -1, "output_usd_per_mtok": 2}}'
    )
    with pytest.raises(ValidationError, match=r"ledger\.prices\.m\.input_usd_per_mtok"):
        Settings()
    with pytest.raises(ValidationError, match="batch_size"):
        LedgerSettings(batch_size=0)
    with pytest.raises(ValidationError, match="extra"):
        LedgerSettings.model_validate({"prices": {"m": {"input_usd_per_mtok": 1, "out": 1}}})


def test_readme_lists_the_built_in_prices() -> None:
    text = README.read_text()
    section = text[text.index("## Request ledger") : text.index("## Layout")]
    table = {
        m.group(1): (float(m.group(2)), float(m.group(3)))
        for m in re.finditer(r"^\| `([^`]+)` \| ([0-9.]+) \| ([0-9.]+) \|", section, re.M)
    }
    prices = LedgerSettings().prices
    assert table == {
        name: (p.input_usd_per_mtok, p.output_usd_per_mtok) for name, p in prices.items()
    }
