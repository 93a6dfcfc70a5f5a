"""One settings tree, read from the environment (``GATEWAY_`` prefix, ``__`` nesting).

Example: ``GATEWAY_LOCAL__MODEL_PATH=/models/x.gguf``, ``GATEWAY_SERVER__PORT=9000``.
Every field documents itself; the README lists them all with their defaults.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    SecretStr,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class ServerSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    host: str = Field("127.0.0.1", description="Interface to bind.")
    port: int = Field(8080, ge=0, le=65535, description="TCP port to bind (0 picks a free one).")
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info",
        description="Log level of the gateway and uvicorn (httpx's request lines: debug only).",
    )
    metrics: bool = Field(
        True, description="Count requests for Prometheus and serve /metrics (false: 404)."
    )
    access_log: bool = Field(
        True,
        description="One JSON line per completion request on stderr (the ledger record's "
        "fields, no prompt or answer text); replaces uvicorn's plain access log.",
    )
    shutdown_grace_s: int = Field(
        30,
        ge=0,
        description="On SIGTERM or SIGINT: new connections are refused at once, requests "
        "already started get this many seconds to finish, then they are cut; the ledger is "
        "flushed and the process exits 0.",
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
    max_body_bytes: int = Field(
        1_048_576,
        ge=1,
        description=(
            "Largest request body in bytes; a larger one (by Content-Length, or by the bytes "
            "received so far when chunked) gets 413 request_too_large before it is read."
        ),
    )
    max_messages: int = Field(256, ge=1, description="Most chat messages per request.")
    max_prompt_tokens: int = Field(
        32768,
        ge=1,
        description="Longest prompt in tokens; longer -> 400 context_length_exceeded.",
    )


class PolicySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    file: Path | None = Field(
        None, description="Routing policy YAML; unset = the built-in default policy."
    )
    reload_interval_s: float = Field(
        2.0, gt=0, description="How often the policy file is checked for changes (hot reload)."
    )


# Headers that carry credentials or framing: the key belongs in api_key (a SecretStr, never
# logged), and httpx computes the framing headers itself.
_RESERVED_HEADERS = frozenset(
    {"authorization", "host", "content-length", "content-type", "transfer-encoding"}
)


class CloudSettings(BaseModel):
    """The OpenAI-compatible cloud upstream. Unset ``base_url`` = a local-only gateway."""

    model_config = ConfigDict(extra="forbid")

    base_url: str | None = Field(
        None,
        description="OpenAI-compatible API root, e.g. https://api.openai.com/v1; "
        "unset = no cloud (local only).",
    )
    model: str = Field("gpt-4o-mini", min_length=1, description="Model name sent to the cloud.")
    api_key: SecretStr | None = Field(
        None, description="Cloud API key, sent only as the Authorization bearer token."
    )
    api_key_file: Path | None = Field(
        None,
        description="Read the cloud API key from this file at start-up instead (whitespace "
        "stripped); not together with API_KEY.",
    )
    extra_headers: dict[str, str] = Field(
        default_factory=dict,
        description="Headers sent on every cloud call, as JSON "
        '(e.g. {"OpenAI-Organization": "org-..."}).',
    )
    connect_timeout_s: float = Field(
        5.0, gt=0, description="Seconds to open a connection to the cloud."
    )
    read_timeout_s: float = Field(
        60.0, gt=0, description="Seconds the cloud may stay silent between two chunks."
    )
    total_timeout_s: float = Field(
        120.0,
        gt=0,
        description="Deadline for a whole cloud request: retries, waits and the full stream.",
    )
    max_connections: int = Field(100, ge=1, description="Most open connections to the cloud.")
    keepalive_expiry_s: float = Field(
        15.0, gt=0, description="Idle connections to the cloud close after this many seconds."
    )
    max_keepalive_connections: int | None = Field(
        None,
        ge=0,
        description="Deprecated and ignored: idle connections are bounded by MAX_CONNECTIONS "
        "and close after KEEPALIVE_EXPIRY_S. Accepted so older configurations still start.",
    )
    max_attempts: int = Field(
        3,
        ge=1,
        description="HTTP attempts per request; connection errors, 429 and 5xx are retried, "
        "only before the first byte reaches the client.",
    )
    backoff_initial_s: float = Field(
        0.25, ge=0, description="Retry backoff cap for the first retry (full jitter, doubling)."
    )
    backoff_max_s: float = Field(4.0, ge=0, description="Largest retry backoff cap.")
    retry_budget_s: float = Field(
        10.0,
        ge=0,
        description="Most seconds one request waits between retries in total; a longer "
        "Retry-After is passed to the client instead.",
    )
    breaker_failures: int = Field(
        5,
        ge=1,
        description="Consecutive failed cloud requests (after retries) that open the circuit.",
    )
    breaker_cooldown_s: float = Field(
        30.0,
        ge=0,
        description="Seconds the open circuit fails fast before one probe request is let through.",
    )

    _file_api_key: SecretStr | None = PrivateAttr(None)

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("must be an http:// or https:// URL with a host")
        if parts.username is not None or parts.password is not None:
            raise ValueError("must not contain credentials; set api_key instead")
        if parts.query or parts.fragment:
            raise ValueError("must not have a query or fragment")
        return value.strip().rstrip("/")

    @field_validator("extra_headers")
    @classmethod
    def _no_reserved_headers(cls, value: dict[str, str]) -> dict[str, str]:
        reserved = sorted(name for name in value if name.strip().lower() in _RESERVED_HEADERS)
        if reserved:
            raise ValueError(f"may not set {', '.join(reserved)} (the key goes in api_key)")
        return value

    @model_validator(mode="after")
    def _read_api_key_file(self) -> CloudSettings:
        if self.api_key_file is None:
            return self
        if self.api_key is not None:
            raise ValueError("set api_key or api_key_file, not both")
        try:
            key = self.api_key_file.read_text().strip()
        except OSError as exc:
            # The reason only: an error message must never quote the file's content.
            raise ValueError(f"api_key_file cannot be read: {exc.strerror}") from None
        if not key:
            raise ValueError("api_key_file is empty")
        self._file_api_key = SecretStr(key)
        return self

    @property
    def configured(self) -> bool:
        return self.base_url is not None

    def resolved_api_key(self) -> str | None:
        secret = self.api_key if self.api_key is not None else self._file_api_key
        return secret.get_secret_value() if secret is not None else None


class CloudPrice(BaseModel):
    """A cloud model's list price, in US dollars per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input_usd_per_mtok: float = Field(
        ge=0, allow_inf_nan=False, description="USD per million prompt (input) tokens."
    )
    output_usd_per_mtok: float = Field(
        ge=0, allow_inf_nan=False, description="USD per million completion (output) tokens."
    )


def _default_prices() -> dict[str, CloudPrice]:
    # OpenAI list prices (standard tier, USD per million tokens) as published in 2025; they
    # change, so the README tells operators to check them.
    return {
        "gpt-4o-mini": CloudPrice(input_usd_per_mtok=0.15, output_usd_per_mtok=0.60),
        "gpt-4o": CloudPrice(input_usd_per_mtok=2.50, output_usd_per_mtok=10.00),
        "gpt-4.1": CloudPrice(input_usd_per_mtok=2.00, output_usd_per_mtok=8.00),
        "gpt-4.1-mini": CloudPrice(input_usd_per_mtok=0.40, output_usd_per_mtok=1.60),
        "gpt-4.1-nano": CloudPrice(input_usd_per_mtok=0.10, output_usd_per_mtok=0.40),
    }


def _default_price() -> CloudPrice:
    return _default_prices()["gpt-4o-mini"]


class LedgerSettings(BaseModel):
    """The request ledger: one row per request, with its costs (SQLite, or Postgres by URL)."""

    # Errors must not echo what was given: URL may hold a database password. (Settings hides
    # inputs too; this covers the ledger commands, which validate LedgerSettings alone.)
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    store_content: bool = Field(
        False,
        description="Opt-in: also store each prompt and answer in the ledger, with what the "
        "policy's privacy floor detects masked as [name]. Never written to the access log.",
    )
    enabled: bool = Field(
        True, description="Keep a record of every completion request (and serve /v1/usage)."
    )
    path: Path = Field(
        Path("hybrid-gateway-ledger.sqlite3"),
        description="SQLite file of the ledger; a relative path is relative to the working "
        "directory.",
    )
    url: SecretStr | None = Field(
        None,
        description="PostgreSQL URL (postgresql://user:password@host:5432/db); set = the "
        "ledger is kept in Postgres instead of PATH's SQLite file, so replicas can share it. "
        "A secret: shown only with the password masked.",
    )
    max_queue: int = Field(
        10_000,
        ge=1,
        description="Records waiting to be written; beyond that new records are dropped "
        "(counted and logged).",
    )
    batch_size: int = Field(200, ge=1, description="Most records written in one transaction.")
    flush_interval_s: float = Field(
        0.5, gt=0, description="Seconds between writes (sooner when a batch is full)."
    )
    prices: dict[str, CloudPrice] = Field(
        default_factory=_default_prices,
        description="Cloud prices per model, as JSON "
        '(e.g. {"my-model": {"input_usd_per_mtok": 1, "output_usd_per_mtok": 2}}); '
        "replaces the built-in table.",
        json_schema_extra={"doc_default": "built-in table, see Request ledger"},
    )
    default_price: CloudPrice = Field(
        default_factory=_default_price,
        description="Price of a cloud model that is not in PRICES, as JSON (default: "
        "gpt-4o-mini's).",
        json_schema_extra={"doc_default": _default_price().model_dump_json()},
    )
    counterfactual_model: str | None = Field(
        None,
        min_length=1,
        description="Model whose price prices the all-cloud counterfactual; "
        "unset = GATEWAY_CLOUD__MODEL.",
    )
    hardware_usd_per_hour: float = Field(
        0.05,
        ge=0,
        allow_inf_nan=False,
        description="What the machine costs per hour (amortised), apportioned to requests by "
        "local compute seconds: an estimate.",
    )
    power_watts: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Power drawn while the local model generates; unset = no energy or CO2e "
        "estimate.",
    )
    grid_gco2e_per_kwh: float = Field(
        400.0,
        ge=0,
        allow_inf_nan=False,
        description="Carbon intensity of the electricity (gCO2e per kWh), used with POWER_WATTS.",
    )

    @field_validator("url")
    @classmethod
    def _postgres_url(cls, value: SecretStr | None) -> SecretStr | None:
        text = value.get_secret_value().strip() if value is not None else ""
        if not text:
            return None
        # The reason only, never the value: it may hold the password.
        try:
            scheme = urlsplit(text).scheme
        except ValueError:
            raise ValueError("is not a valid URL") from None
        if scheme not in ("postgresql", "postgres"):
            raise ValueError("must be a postgresql:// URL")
        return SecretStr(text)


_KEY_ID = r"^[A-Za-z0-9._-]{1,64}$"
_KEY_HASH = re.compile(r"sha256:[0-9a-f]{64}")


def _check_key_hash(value: str) -> str:
    value = value.strip().lower()
    if not _KEY_HASH.fullmatch(value):
        # Never quote the value: it may be a key pasted where its hash belongs.
        raise ValueError(
            "must be 'sha256:' and 64 hex digits, as printed by `hybrid-gateway keys create` "
            "(a hash, never the key itself)"
        )
    return value


class KeyLimitSettings(BaseModel):
    """Limits every client key gets unless its own entry in AUTH__KEYS sets others."""

    model_config = ConfigDict(extra="forbid")

    requests_per_minute: int | None = Field(
        None,
        ge=1,
        description="Completion requests a key may start in any 60 s; more -> 429 with "
        "Retry-After. Unset = no limit.",
    )
    tokens_per_minute: int | None = Field(
        None,
        ge=1,
        description="Prompt + completion tokens (local and cloud) of a key's requests that "
        "finished in the last 60 s; at or over it -> 429. Unset = no limit.",
    )
    daily_cloud_usd: float | None = Field(
        None,
        ge=0,
        allow_inf_nan=False,
        description="Cloud spend (USD, per UTC day) after which the policy's "
        "on_budget_exhausted applies to the key (local_only or reject). Unset = no budget.",
    )


class ClientKey(BaseModel):
    """One client API key, by the SHA-256 hash that ``hybrid-gateway keys create`` prints."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    id: str = Field(
        pattern=_KEY_ID,
        description="Who holds the key: 1-64 of A-Za-z0-9._- (goes into records and logs).",
    )
    hash: str = Field(description="sha256:<64 hex digits> of the key.")
    requests_per_minute: int | None = Field(None, ge=1, description="Overrides the default.")
    tokens_per_minute: int | None = Field(None, ge=1, description="Overrides the default.")
    daily_cloud_usd: float | None = Field(
        None, ge=0, allow_inf_nan=False, description="Overrides the default."
    )

    @field_validator("hash")
    @classmethod
    def _valid_hash(cls, value: str) -> str:
        return _check_key_hash(value)


class AuthSettings(BaseModel):
    """Client API keys for /v1/*, and the admin credential for /metrics, /v1/usage, /admin/*."""

    # A key pasted where a hash belongs must not be echoed by a validation error.
    model_config = ConfigDict(extra="forbid", hide_input_in_errors=True)

    disabled: bool = Field(
        False,
        description="Local development only: no client key is needed (logged as a warning at "
        "every start); admin routes stay open unless ADMIN_KEY_HASH is set.",
    )
    keys: list[ClientKey] = Field(
        default_factory=list,
        description='Client keys as JSON: [{"id": "alice", "hash": "sha256:..."}], optionally '
        "with requests_per_minute, tokens_per_minute, daily_cloud_usd per key.",
    )
    keys_file: Path | None = Field(
        None,
        description="A YAML or JSON file with more client keys (a list of the same entries), "
        "read at start-up.",
    )
    admin_key_hash: str | None = Field(
        None,
        description="sha256:<hex> of the admin key (/metrics, /v1/usage of every key, "
        "/admin/*); unset = those answer 403 (open when DISABLED).",
    )

    _file_keys: tuple[ClientKey, ...] = PrivateAttr(())

    @field_validator("admin_key_hash")
    @classmethod
    def _admin_hash(cls, value: str | None) -> str | None:
        return _check_key_hash(value) if value is not None and value.strip() else None

    @model_validator(mode="after")
    def _read_keys_file(self) -> AuthSettings:
        from pydantic import TypeAdapter, ValidationError

        if self.keys_file is not None:
            import yaml

            try:
                loaded = yaml.safe_load(self.keys_file.read_text())
            except OSError as exc:
                raise ValueError(f"keys_file cannot be read: {exc.strerror}") from None
            except yaml.YAMLError as exc:
                raise ValueError(f"keys_file is not YAML or JSON: {exc}") from None
            try:
                entries = TypeAdapter(list[ClientKey]).validate_python(loaded or [])
            except ValidationError as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
                )
                raise ValueError(f"keys_file {self.keys_file}: {problems}") from None
            self._file_keys = tuple(entries)
        seen_ids: set[str] = set()
        seen_hashes = {self.admin_key_hash} if self.admin_key_hash else set()
        for key in self.client_keys():
            if key.id in seen_ids:
                raise ValueError(f"key id {key.id!r} is configured twice")
            if key.hash in seen_hashes:
                raise ValueError(f"key {key.id!r} has the hash of another (or the admin) key")
            seen_ids.add(key.id)
            seen_hashes.add(key.hash)
        return self

    def client_keys(self) -> tuple[ClientKey, ...]:
        """KEYS then the entries of KEYS_FILE."""
        return (*self.keys, *self._file_keys)


class CorsSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow_origins: list[str] = Field(
        default_factory=list,
        description='Browser origins allowed to call the API, as JSON (["https://app.example"]);'
        ' empty = CORS off. "*" is refused: name each origin.',
    )

    @field_validator("allow_origins")
    @classmethod
    def _explicit_origins(cls, origins: list[str]) -> list[str]:
        checked = []
        for origin in origins:
            parts = urlsplit(origin.strip())
            if origin.strip() == "*":
                raise ValueError('"*" is not allowed: list each origin explicitly')
            if (
                parts.scheme not in ("http", "https")
                or not parts.hostname
                or parts.path not in ("", "/")
                or parts.query
                or parts.fragment
                or parts.username is not None
            ):
                raise ValueError(f"{origin!r} is not an origin (scheme://host[:port])")
            checked.append(f"{parts.scheme}://{parts.netloc}".lower())
        return checked


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="GATEWAY_",
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
        # Errors give the field and the reason, never the value: it may be a secret (a
        # database URL's password, a key). Only the outermost model's choice counts here.
        hide_input_in_errors=True,
    )

    server: ServerSettings = Field(default_factory=ServerSettings)
    local: LocalModelSettings = Field(default_factory=LocalModelSettings)
    limits: LimitSettings = Field(default_factory=LimitSettings)
    cloud: CloudSettings = Field(default_factory=CloudSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    key_limits: KeyLimitSettings = Field(default_factory=KeyLimitSettings)
    cors: CorsSettings = Field(default_factory=CorsSettings)


def settings_reference() -> list[tuple[str, str, str]]:
    """(environment variable, default, description) for every setting, for docs."""
    rows: list[tuple[str, str, str]] = []

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            annotation: Any = info.annotation
            extra = info.json_schema_extra
            # A documented default stands for the whole field, nested models included (their
            # parts cannot be set alone, or the default is too long for a table cell).
            doc_default = extra.get("doc_default") if isinstance(extra, dict) else None
            if (
                doc_default is None
                and isinstance(annotation, type)
                and issubclass(annotation, BaseModel)
            ):
                walk(annotation, f"{prefix}{name.upper()}__")
                continue
            if info.default_factory is _default_threads:
                default = "number of CPUs"
            elif doc_default is not None:
                default = str(doc_default)
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
