"""One settings tree, read from the environment (``GATEWAY_`` prefix, ``__`` nesting).

Example: ``GATEWAY_LOCAL__MODEL_PATH=/models/x.gguf``, ``GATEWAY_SERVER__PORT=9000``.
Every field documents itself; the README lists them all with their defaults.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to bind (0 picks a free one).")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info", description="Log level of the gateway and uvicorn."
    )


class SamplingDefaults(BaseModel):
    model_config = ConfigDict(extra="forbid")

    """Used when a request leaves a sampling field out (llama.cpp server's defaults)."""

    temperature: float = Field(0.8, ge=0, le=2, description="Default temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Default nucleus sampling mass.")
    top_k: int = Field(40, ge=0, description="Top-k cut before sampling (0 = off).")
    min_p: float = Field(0.05, ge=0, le=1, description="Min-p cut before sampling.")
    max_tokens: int = Field(
        512, ge=1, description="Completion length when the request does not set one."
    )


class LocalModelSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_path: Path | None = Field(
        None, description="GGUF file to serve; unset = the embedded SmolLM2-135M-Instruct Q4_1."
    )
    model_id: str = Field("local", description="Model id that pins a request to the local model.")
    n_ctx: int = Field(4096, ge=64, description="Context window in tokens (prompt + completion).")
    n_threads: int = Field(
        default_factory=_default_threads, ge=1, description="Decode threads (default: all CPUs)."
    )
    n_threads_batch: int = Field(
        default_factory=_default_threads,
        ge=1,
        description="Prompt-processing threads (default: all CPUs).",
    )
    n_batch: int = Field(512, ge=1, description="Prompt tokens evaluated per batch.")
    max_waiting: int = Field(
        16,
        ge=0,
        description="Requests that may wait while one generates; beyond that -> 503.",
    )
    prefix_cache: bool = Field(
        True,
        description="Reuse the KV cache for a prompt prefix shared with the previous request "
        "(multi-turn chats); requests with a seed always start afresh so they reproduce.",
    )
    stream_interval_ms: float = Field(
        20,
        ge=0,
        le=1000,
        description="Streaming: after the first token, write to the client at most this often; "
        "tokens sampled in between go out together, one SSE event each (0 = write every token "
        "at once). Each write wakes the server and the client.",
    )
    sampling: SamplingDefaults = Field(default_factory=SamplingDefaults)


class LimitSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_completion_tokens: int = Field(
        4096, ge=1, description="Largest max_tokens a request may ask for."
    )
    max_stop_sequences: int = Field(4, ge=0, description="Most stop strings per request.")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    routed_model_id: str = Field(
        "hybrid", description="Model id the router decides for (the default a client should use)."
    )
    server: ServerSettings = Field(default_factory=ServerSettings)
    local: LocalModelSettings = Field(default_factory=LocalModelSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)

    @field_validator("routed_model_id")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value


def settings_reference() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting, for docs."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation: Any = info.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name.upper()}__")
                continue
            if info.default_factory is _default_threads:
                default = "number of CPUs"
            else:
                default = str(info.get_default(call_default_factory=True))
            rows.append((f"{prefix}{name.upper()}", default, info.description or ""))

    walk(Settings, "GATEWAY_")
    return rows


def unknown_environment_variables(environ: Mapping[str, str]) -> list[str]:
    """``GATEWAY_*`` variables that name no setting (likely typos).

    Nested typos (``GATEWAY_LOCAL__N_CTXX``) already fail validation; top-level
    ones would otherwise be ignored silently.
    """
    known = {name for name, _, _ in settings_reference()}
    prefixes = {name.rsplit("__", 1)[0] + "__" for name in known if "__" in name}
    return sorted(
        key
        for key in environ
        if key.upper().startswith("GATEWAY_")
        and key.upper() not in known
        and not any(key.upper().startswith(p) for p in prefixes)
    )
