"""One trace per completion request, turned into exactly one ledger record.

The middleware opens the trace before anything can fail (body parsing
included) and hands it to the recorder however the response ends: served,
refused, failed or abandoned by the client. Handlers fill in what they learn
(decision, outcome, the local generations and cloud calls). Local compute
is only known when the model thread has stopped, which for a departed
client is a token later, so records are finished off the request path.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway import access_log
from gateway.ledger.record import Endpoint, LedgerRecord
from gateway.outcome import Outcome, VisibleRoute
from local_model import GenerationDone
from local_model.generation import Generation
from router import Decision

if TYPE_CHECKING:
    from gateway.auth.limits import KeyLimiter
    from gateway.cloud import CloudUsage
    from gateway.ledger.writer import Ledger
    from gateway.metrics import GatewayMetrics
    from gateway.settings import Settings

logger = logging.getLogger(__name__)

_PATHS: dict[str, Endpoint] = {"/v1/chat/completions": "chat", "/v1/completions": "text"}
# Enough of a refused body to read its model id and stream flag.
_PEEK_BYTES = 65536
# How long a finished response waits for its local generation to stop.
_GENERATION_GRACE_S = 30.0


@dataclass
class RequestTrace:
    request_id: str
    endpoint: Endpoint
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.perf_counter)
    model: str = ""
    stream: bool = False
    prompt_tokens: int | None = None
    decision: Decision | None = None
    #: the gate's threshold in the policy that served this request
    threshold: float | None = None
    #: what the client was told (read back from the x-hybrid-* response headers)
    outcome: Outcome | None = None
    generations: list[Generation] = field(default_factory=list)
    cloud_model: str | None = None
    cloud_usage: CloudUsage | None = None
    cloud_seconds: float = 0.0
    cloud_attempts: int = 0
    status: int | None = None
    error: str | None = None
    first_byte: float | None = None
    ended: float | None = None
    finished_body: bool = False
    #: GATEWAY_LEDGER__STORE_CONTENT: keep the (masked) prompt and answer
    store_content: bool = False
    mask: Callable[[str], str] | None = None
    prompt_text: str | None = None
    completion_text: str | None = None
    #: the client key's id (never the key), set by the auth middleware
    key_id: str | None = None

    def answer(self, text: str) -> None:
        """The answer as the client received it (kept only with store_content)."""
        if self.store_content:
            self.completion_text = text

    def _masked(self, text: str | None) -> str | None:
        if not self.store_content or text is None:
            return None
        return self.mask(text) if self.mask is not None else text

    def cloud_call(
        self, model: str, seconds: float, attempts: int, usage: CloudUsage | None
    ) -> None:
        self.cloud_model = model
        self.cloud_seconds += seconds
        self.cloud_attempts += attempts
        if usage is not None:
            self.cloud_usage = usage

    def to_record(self, done: list[GenerationDone]) -> LedgerRecord:
        ended = self.ended if self.ended is not None else time.perf_counter()
        outcome, decision = self.outcome, self.decision
        status = self.status if self.status is not None else 500
        error = self.error
        if status < 400 and not self.finished_body:
            # The client left mid-response: whatever the status line said.
            status, error = 499, "client_disconnected"
        elif status == 499:
            error = "client_disconnected"
        usage = self.cloud_usage
        return LedgerRecord(
            request_id=self.request_id,
            started_at=self.started_at,
            endpoint=self.endpoint,
            model=self.model,
            stream=self.stream,
            status=status,
            error=error,
            route=outcome.route if outcome is not None else None,
            reason=(
                outcome.reason if outcome is not None else decision.reason if decision else None
            ),
            degraded=outcome.degraded if outcome is not None else None,
            privacy_match=decision.privacy_match if decision is not None else None,
            prompt_tokens=self.prompt_tokens,
            confidence=outcome.confidence if outcome is not None else None,
            threshold=outcome.threshold if outcome is not None else None,
            local_prompt_tokens=sum(d.stats.prompt_tokens for d in done),
            local_completion_tokens=sum(d.stats.completion_tokens for d in done),
            local_seconds=sum(d.stats.prefill_seconds + d.stats.decode_seconds for d in done),
            local_queue_seconds=sum(d.stats.queue_seconds for d in done),
            cloud_model=self.cloud_model,
            cloud_prompt_tokens=usage.prompt_tokens if usage is not None else 0,
            cloud_completion_tokens=usage.completion_tokens if usage is not None else 0,
            cloud_seconds=self.cloud_seconds,
            cloud_attempts=self.cloud_attempts,
            ttft_seconds=self.first_byte - self.started if self.first_byte is not None else None,
            total_seconds=ended - self.started,
            key_id=self.key_id,
            prompt_text=self._masked(self.prompt_text),
            completion_text=self._masked(self.completion_text),
        )


def current_trace(scope_state: Any) -> RequestTrace | None:
    trace = getattr(scope_state, "trace", None)
    return trace if isinstance(trace, RequestTrace) else None


class Recorder:
    """Finishes traces into records: ledger, metrics, access log."""

    def __init__(
        self,
        settings: Settings,
        *,
        ledger: Ledger | None,
        metrics: GatewayMetrics | None,
        limiter: KeyLimiter | None = None,
    ) -> None:
        from gateway.ledger.cost import price_costs

        self._price = price_costs
        self._settings = settings
        self._cloud_model = settings.cloud.model
        self.ledger = ledger
        self.metrics = metrics
        #: per-key limits count each finished request's tokens and cloud spend
        self.limiter = limiter
        self._pending: set[asyncio.Task[None]] = set()
        self.finished = 0

    def finish(self, trace: RequestTrace) -> None:
        if (
            self.ledger is None
            and self.metrics is None
            and self.limiter is None
            and not access_log.enabled()
        ):
            return  # nothing reads the record: do not build it (about 7 us a request)
        if all(g.ended for g in trace.generations):
            # The usual case (cloud answers, finished local ones): no task needed.
            self._write(trace, [d for g in trace.generations if (d := g.final_done) is not None])
            return
        task = asyncio.get_running_loop().create_task(self._finish(trace))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _finish(self, trace: RequestTrace) -> None:
        done: list[GenerationDone] = []
        for generation in trace.generations:
            with contextlib.suppress(Exception):
                # A failed generation left no stats; a departed client's stops within a token.
                done.append(await asyncio.wait_for(generation.finished(), _GENERATION_GRACE_S))
        self._write(trace, done)

    def _write(self, trace: RequestTrace, done: list[GenerationDone]) -> None:
        try:
            record = trace.to_record(done)
            # price_costs prices the record's own cloud model when it has one.
            costs = self._price(record, self._settings.ledger, self._cloud_model)
        except Exception:
            logger.exception("could not build the ledger record of %s", trace.request_id)
            return
        self.finished += 1
        if self.ledger is not None:
            self.ledger.record(record, costs)  # priced once, for ledger, metrics and log
        if self.limiter is not None:
            self.limiter.observe(record, costs.cloud_usd)
        if self.metrics is not None:
            try:
                self.metrics.observe(
                    record,
                    cloud_usd=costs.cloud_usd,
                    local_usd=costs.local_usd,
                    counterfactual_usd=costs.counterfactual_usd,
                    savings_usd=costs.savings_usd,
                )
            except Exception:  # a metrics bug must not lose the access log line
                logger.exception("metrics could not count request %s", record.request_id)
        if access_log.enabled():
            try:
                access_log.write(
                    access_log.line(
                        record,
                        cost_usd=costs.cloud_usd + costs.local_usd,
                        savings_usd=costs.savings_usd,
                    )
                )
            except Exception:  # never into the request (the ledger has the record)
                logger.exception("could not write the access log line of %s", record.request_id)

    async def drain(self, timeout: float = _GENERATION_GRACE_S) -> None:
        """Wait for records still being finished (graceful shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout)


class TraceMiddleware:
    """Opens a trace for each completion request and records it however it ends."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = _PATHS.get(scope.get("path", "")) if scope["type"] == "http" else None
        state = scope.get("state") or {}
        services = state.get("services")
        if endpoint is None or scope.get("method") != "POST" or services is None:
            await self.app(scope, receive, send)
            return
        trace = RequestTrace(request_id=state.get("request_id", ""), endpoint=endpoint)
        state["trace"] = trace
        peeked = bytearray()

        async def peek() -> Message:
            message: Message = await receive()
            if message["type"] == "http.request" and len(peeked) < _PEEK_BYTES:
                peeked.extend(message.get("body", b"")[: _PEEK_BYTES - len(peeked)])
            return message

        async def watch(message: Message) -> None:
            if message["type"] == "http.response.start":
                trace.status = message["status"]
                trace.outcome = _outcome_of(Headers(raw=message["headers"]), trace.threshold)
            elif message["type"] == "http.response.body":
                if trace.first_byte is None and message.get("body"):
                    trace.first_byte = time.perf_counter()
                if trace.status is not None and trace.status >= 400 and trace.error is None:
                    trace.error = _error_code(message.get("body", b""))
                if not message.get("more_body", False):
                    trace.finished_body = True
            await send(message)

        try:
            await self.app(scope, peek, watch)
        except BaseException:
            if trace.status is None:
                trace.status, trace.error = 500, "internal_error"
            raise
        finally:
            trace.ended = time.perf_counter()
            if not trace.model:
                _fill_from_body(trace, bytes(peeked))
            services.recorder.finish(trace)


def _outcome_of(headers: Headers, threshold: float | None) -> Outcome | None:
    route: VisibleRoute
    match headers.get("x-hybrid-route"):
        case "local":
            route = "local"
        case "cloud":
            route = "cloud"
        case "local->cloud":
            route = "local->cloud"
        case _:
            return None
    confidence = headers.get("x-hybrid-confidence")
    return Outcome(
        route=route,
        reason=headers.get("x-hybrid-reason", ""),
        confidence=float(confidence) if confidence is not None else None,
        threshold=threshold if confidence is not None else None,
        degraded=headers.get("x-hybrid-degraded"),
    )


def _error_code(body: bytes) -> str | None:
    with contextlib.suppress(ValueError, AttributeError, TypeError):
        error = json.loads(body)["error"]
        return _utf8(str(error.get("code") or error.get("type"))[:200])
    return None


def _utf8(text: str) -> str:
    """``text`` with what UTF-8 cannot carry (lone surrogates, which json accepts as
    escapes) replaced by '?': no store or log could write the record otherwise."""
    return text.encode("utf-8", "replace").decode()


def _fill_from_body(trace: RequestTrace, body: bytes) -> None:
    """Best effort for requests refused before a handler read them."""
    with contextlib.suppress(ValueError, UnicodeDecodeError):
        data = json.loads(body)
        if isinstance(data, dict):
            model = data.get("model")
            # A lone surrogate here used to stall the ledger's batch for good.
            trace.model = _utf8(model[:200]) if isinstance(model, str) else ""
            trace.stream = data.get("stream") is True
