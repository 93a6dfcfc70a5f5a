"""What the gateway knows about one finished request: facts only, no prices.

Costs are derived from a record and the configured prices when it is
written (gateway.ledger.cost), so a price change never rewrites history
silently: the costs stored are the ones computed at the time.
"""

from __future__ import annotations

from typing import Literal

from local_model.values import value

Endpoint = Literal["chat", "text"]
RecordRoute = Literal["local", "cloud", "local->cloud"]


@value
class LedgerRecord:
    request_id: str
    #: Unix time (seconds) when the request arrived
    started_at: float
    endpoint: Endpoint
    #: the model id the client asked for ("" when the body could not be read)
    model: str
    stream: bool
    #: HTTP status sent; 499 when the client went away first
    status: int
    #: the error's code (or type) when status >= 400, "client_disconnected" for 499
    error: str | None
    #: where the answer came from; None when the request was refused before routing
    route: RecordRoute | None
    #: the rule that decided (x-hybrid-reason)
    reason: str | None
    #: "cloud-unavailable" / "cloud-error" / "budget-exhausted" when the answer is not what
    #: the policy wanted
    degraded: str | None
    #: name of the privacy pattern that kept the request local
    privacy_match: str | None
    #: prompt length by the local tokenizer (a routing signal), when known
    prompt_tokens: int | None
    confidence: float | None
    threshold: float | None
    local_prompt_tokens: int
    local_completion_tokens: int
    #: seconds the local model spent on this request (prompt processing + decoding)
    local_seconds: float
    #: seconds the request waited for the local model
    local_queue_seconds: float
    cloud_model: str | None
    cloud_prompt_tokens: int
    cloud_completion_tokens: int
    #: wall time of the cloud call(s), retries included
    cloud_seconds: float
    cloud_attempts: int
    #: seconds from arrival to the first byte of the response body
    ttft_seconds: float | None
    #: seconds from arrival to the last byte (or to the failure / disconnect)
    total_seconds: float
    #: id of the client key, once authentication exists
    key_id: str | None = None
    #: the conversation / prompt, privacy-floor matches masked; only with
    #: GATEWAY_LEDGER__STORE_CONTENT=true (never in the access log)
    prompt_text: str | None = None
    #: the answer as sent, masked the same way; same opt-in
    completion_text: str | None = None
