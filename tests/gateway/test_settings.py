from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import Settings, settings_reference, unknown_environment_variables

README = Path(__file__).resolve().parents[2] / "README.md"


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_LOCAL__N_CTX", "1024")
    monkeypatch.setenv("GATEWAY_SERVER__PORT", "9000")
    monkeypatch.setenv("GATEWAY_LOCAL__SAMPLING__TEMPERATURE", "0")
    settings = Settings()
    assert settings.local.n_ctx == 1024
    assert settings.server.port == 9000
    assert settings.local.sampling.temperature == 0


def test_invalid_value_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_LOCAL__N_CTX", "tiny")
    with pytest.raises(ValidationError, match=r"local\.n_ctx"):
        Settings()


def test_nested_typo_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_LOCAL__N_CTXX", "5")
    with pytest.raises(ValidationError, match=r"n_ctxx"):
        Settings()


def test_top_level_typo_is_reported() -> None:
    environ = {"GATEWAY_ROUTED_MODEL": "x", "GATEWAY_LOCAL__N_CTX": "5", "HOME": "/"}
    assert unknown_environment_variables(environ) == ["GATEWAY_ROUTED_MODEL"]


def test_readme_documents_every_setting_and_default() -> None:
    table = {
        m.group(1): m.group(2)
        for m in re.finditer(
            r"^\| `(GATEWAY_[A-Z0-9_]+)` \| `([^`]*)` \|", README.read_text(), re.M
        )
    }
    reference = {name: default for name, default, _ in settings_reference()}
    assert table == reference
