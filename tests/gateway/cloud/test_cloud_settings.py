from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from gateway.settings import CloudSettings, Settings
from tests.gateway.cloud.conftest import CANARY_KEY


def test_default_is_local_only() -> None:
    settings = Settings().cloud
    assert settings.configured is False
    assert settings.resolved_api_key() is None


def test_nested_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CLOUD__BASE_URL", "https://api.openai.com/v1/")
    monkeypatch.setenv("GATEWAY_CLOUD__API_KEY", CANARY_KEY)
    monkeypatch.setenv("GATEWAY_CLOUD__EXTRA_HEADERS", '{"OpenAI-Organization": "org-1"}')
    monkeypatch.setenv("GATEWAY_CLOUD__MAX_ATTEMPTS", "5")
    cloud = Settings().cloud
    assert cloud.base_url == "https://api.openai.com/v1"
    assert cloud.configured is True
    assert cloud.resolved_api_key() == CANARY_KEY
    assert cloud.extra_headers == {"OpenAI-Organization": "org-1"}
    assert cloud.max_attempts == 5
    assert CANARY_KEY not in repr(cloud)


def test_api_key_file_is_read_and_stripped(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(f"  {CANARY_KEY}\n")
    cloud = CloudSettings(base_url="http://127.0.0.1:8000/v1", api_key_file=key_file)
    assert cloud.resolved_api_key() == CANARY_KEY
    assert CANARY_KEY not in repr(cloud)


def test_api_key_and_file_together_are_refused(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text(CANARY_KEY)
    with pytest.raises(ValidationError, match="not both") as info:
        CloudSettings(api_key="sk-other", api_key_file=key_file)
    assert CANARY_KEY not in str(info.value)


@pytest.mark.parametrize(("content", "reason"), [(None, "cannot be read"), ("  \n", "empty")])
def test_bad_api_key_file(tmp_path: Path, content: str | None, reason: str) -> None:
    key_file = tmp_path / "key"
    if content is not None:
        key_file.write_text(content)
    with pytest.raises(ValidationError, match=reason):
        CloudSettings(api_key_file=key_file)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/v1",
        "api.openai.com/v1",
        "https://",
        "https://user:secret@example.com/v1",
        "https://example.com/v1?x=1",
    ],
)
def test_base_url_validation(url: str) -> None:
    with pytest.raises(ValidationError, match="base_url"):
        CloudSettings(base_url=url)


def test_blank_base_url_means_no_cloud() -> None:
    assert CloudSettings(base_url="  ").configured is False


def test_invalid_env_names_the_field(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GATEWAY_CLOUD__BASE_URL", "not a url")
    with pytest.raises(ValidationError, match=r"cloud\.base_url"):
        Settings()


def test_authorization_cannot_be_an_extra_header() -> None:
    with pytest.raises(ValidationError, match="api_key"):
        CloudSettings(extra_headers={"Authorization": "Bearer x"})


@pytest.mark.parametrize(
    "field", ["connect_timeout_s", "read_timeout_s", "total_timeout_s", "max_attempts"]
)
def test_limits_must_be_positive(field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        CloudSettings.model_validate({field: 0})
