from __future__ import annotations

from pathlib import Path

import pytest

from local_model import ModelNotFoundError
from local_model.model_path import embedded_model_path, resolve_model_path


def test_embedded_default_is_found(model_path: Path) -> None:
    assert model_path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert model_path.stat().st_size > 50_000_000
    assert resolve_model_path(None) == model_path


def test_configured_path_replaces_the_default(tmp_path: Path) -> None:
    gguf = tmp_path / "other.gguf"
    gguf.write_bytes(b"GGUF")
    assert resolve_model_path(gguf) == gguf


def test_missing_configured_path_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFoundError, match="not found"):
        resolve_model_path(tmp_path / "absent.gguf")


def test_missing_package_says_how_to_fix() -> None:
    with pytest.raises(ModelNotFoundError, match="GATEWAY_LOCAL__MODEL_PATH"):
        embedded_model_path(package="no_such_model_package_xyz")


def test_package_is_located_without_importing_it(tmp_path: Path, monkeypatch) -> None:
    package = tmp_path / "boobytrapped_model"
    package.mkdir()
    (package / "__init__.py").write_text("raise RuntimeError('must not be imported')\n")
    (package / "m.gguf").write_bytes(b"GGUF")
    monkeypatch.syspath_prepend(str(tmp_path))
    assert embedded_model_path(package="boobytrapped_model", filename="m.gguf") == (
        package / "m.gguf"
    )
