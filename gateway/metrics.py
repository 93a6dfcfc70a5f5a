"""Prometheus metrics: counters fed once per finished request, gauges read at scrape time.

Two kinds of source, kept apart so the request path stays cheap:

    observe()   one call per finished request (a LedgerRecord and its costs) on
                the event loop: queued, then counted (counter increments and
                histogram observations only) in batches of FLUSH_EVERY and before
                every scrape, so a scrape always sees every request observed
    bind()      callbacks for live state (local queue, cloud circuit, ledger
                queue), read by a custom collector when /metrics is scraped

Every instance owns its CollectorRegistry, never the process-global one: tests
create many apps in one process, and two gateways must not share counts.

Label values are bounded: route is one of ``ROUTES``, reason a rule name of the
policy (or a reason the router reserves), status an HTTP status code, endpoint
``chat``/``text``, degraded ``cloud-unavailable``/``cloud-error``/``budget-exhausted``.
Request ids, model ids (client-chosen), prompts, error messages and key ids never
become labels.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import CounterMetricFamily, GaugeMetricFamily, Metric

from gateway.ledger.record import LedgerRecord
from local_model.types import EngineStatus

logger = logging.getLogger(__name__)

PREFIX = "hybrid_gateway_"

#: route label values; "none" for requests refused before routing
ROUTES = ("local", "cloud", "local->cloud", "none")
#: cloud circuit states (gateway.cloud.breaker), one 0/1 series each
CIRCUIT_STATES = ("closed", "half_open", "open")

# Time to first token: a cached local prefix answers in ~10 ms, a cold cloud call
# with retries can take most of the 60 s read timeout.
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0)
# Whole requests run up to the cloud's total deadline (120 s by default) and beyond
# for long local generations.
DURATION_BUCKETS = (
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0,
)  # fmt: skip

EngineStatusSource = Callable[[], EngineStatus]
BreakerStateSource = Callable[[], dict[str, Any]]
#: (records waiting to be written, records dropped since start)
LedgerStatsSource = Callable[[], tuple[int, int]]

_RequestKey = tuple[str, str | None, int, str]
#: a request and its costs: cloud, local, all-cloud counterfactual, savings (USD)
_Observed = tuple[LedgerRecord, float, float, float, float]
#: requests counted together; a scrape counts whatever is pending first
FLUSH_EVERY = 256
_T = TypeVar("_T")


class GatewayMetrics:
    def __init__(self) -> None:
        self._registry = CollectorRegistry()
        registry = self._registry
        self._requests = Counter(
            PREFIX + "requests_total",
            "Finished requests by route, deciding rule, HTTP status and endpoint.",
            ("route", "reason", "status", "endpoint"),
            registry=registry,
        )
        ttft = Histogram(
            PREFIX + "time_to_first_token_seconds",
            "Seconds from arrival to the first byte of the response body.",
            ("route",),
            buckets=TTFT_BUCKETS,
            registry=registry,
        )
        duration = Histogram(
            PREFIX + "request_duration_seconds",
            "Seconds from arrival to the last byte (or the failure or disconnect).",
            ("route",),
            buckets=DURATION_BUCKETS,
            registry=registry,
        )
        tokens = Counter(
            PREFIX + "tokens_total",
            "Tokens processed, by the side that processed them and kind.",
            ("side", "kind"),
            registry=registry,
        )

        def usd(name: str, documentation: str) -> Counter:
            return Counter(PREFIX + name, documentation, registry=registry)

        self._cloud_usd = usd("cloud_cost_usd_total", "Cloud spend in USD at configured prices.")
        self._local_usd = usd(
            "local_cost_usd_total", "Estimated cost in USD of the local model's work."
        )
        self._counterfactual_usd = usd(
            "all_cloud_counterfactual_usd_total",
            "USD the same requests would have cost had all of them gone to the cloud.",
        )
        # Savings are negative when a request costs more than all-cloud would have
        # (an escalation pays for the local attempt and the cloud answer). A counter
        # cannot go down, and a gauge that accumulates restarts from 0 on every
        # restart, which rate()/increase() cannot correct on a gauge. Two counters
        # keep resets handled and both sides visible; net savings over a window is
        # increase(savings_usd_total) - increase(overspend_usd_total).
        self._savings_usd = usd(
            "savings_usd_total", "Sum of positive per-request savings against all-cloud, USD."
        )
        self._overspend_usd = usd(
            "overspend_usd_total",
            "Sum of negative per-request savings against all-cloud, as a positive USD amount.",
        )
        self._escalations = Counter(
            PREFIX + "escalations_total",
            "Answers escalated from the local model to the cloud (route local->cloud), "
            "by deciding rule.",
            ("reason",),
            registry=registry,
        )
        self._degraded = Counter(
            PREFIX + "degraded_total",
            "Answers that are not what the policy wanted, by why (cloud-unavailable, "
            "cloud-error, budget-exhausted).",
            ("why",),
            registry=registry,
        )
        self._cloud_attempts = usd(
            "cloud_attempts_total", "HTTP attempts made to the cloud upstream, retries included."
        )
        self._cloud_retries = usd(
            "cloud_retries_total", "Cloud attempts beyond the first of their request."
        )

        # Children resolved once: labels() validates and stringifies on every call.
        self._ttft = {route: ttft.labels(route) for route in ROUTES}
        self._duration = {route: duration.labels(route) for route in ROUTES}
        self._local_prompt = tokens.labels("local", "prompt")
        self._local_completion = tokens.labels("local", "completion")
        self._cloud_prompt = tokens.labels("cloud", "prompt")
        self._cloud_completion = tokens.labels("cloud", "completion")
        # As bounded as the label values themselves (prometheus_client keeps the
        # same children); keyed by the raw record fields so a hit costs no str().
        self._request_children: dict[_RequestKey, Counter] = {}
        self._escalation_children: dict[str | None, Counter] = {}
        self._degraded_children: dict[str, Counter] = {}

        # Requests observed but not yet counted: counted in batches (and at every scrape).
        # prometheus_client takes a lock per increment; ~10 per request, spread between
        # requests, cost the gateway 4% of its CPU per cloud request (bench A/B, metrics off).
        self._pending: list[_Observed] = []

        self._live = _LiveCollector()
        registry.register(self._live)

    @property
    def registry(self) -> CollectorRegistry:
        """The registry, with every request observed so far counted in it."""
        self.flush()
        return self._registry

    def observe(
        self,
        record: LedgerRecord,
        *,
        cloud_usd: float,
        local_usd: float,
        counterfactual_usd: float,
        savings_usd: float,
    ) -> None:
        """Count one finished request. Costs must be >= 0; savings may be negative.

        Raises ValueError (before counting anything) for a negative cost.
        """
        if cloud_usd < 0 or local_usd < 0 or counterfactual_usd < 0:
            raise ValueError("costs must not be negative")
        self._pending.append((record, cloud_usd, local_usd, counterfactual_usd, savings_usd))
        if len(self._pending) >= FLUSH_EVERY:
            self.flush()

    def flush(self) -> None:
        """Count the requests observed since the last flush (done at every scrape too)."""
        pending, self._pending = self._pending, []
        for item in pending:
            try:
                self._count(item)
            except Exception:  # one bad record must not lose the others' counts
                logger.exception("metrics could not count request %s", item[0].request_id)

    def _count(self, observed: _Observed) -> None:
        record, cloud_usd, local_usd, counterfactual_usd, savings_usd = observed
        route = record.route or "none"
        key = (route, record.reason, record.status, record.endpoint)
        child = self._request_children.get(key)
        if child is None:
            child = self._requests.labels(
                route, record.reason or "none", str(record.status), record.endpoint
            )
            self._request_children[key] = child
        child.inc()

        if record.ttft_seconds is not None:
            self._ttft[route].observe(record.ttft_seconds)
        self._duration[route].observe(record.total_seconds)

        if record.local_prompt_tokens:
            self._local_prompt.inc(record.local_prompt_tokens)
        if record.local_completion_tokens:
            self._local_completion.inc(record.local_completion_tokens)
        if record.cloud_prompt_tokens:
            self._cloud_prompt.inc(record.cloud_prompt_tokens)
        if record.cloud_completion_tokens:
            self._cloud_completion.inc(record.cloud_completion_tokens)

        if cloud_usd:
            self._cloud_usd.inc(cloud_usd)
        if local_usd:
            self._local_usd.inc(local_usd)
        if counterfactual_usd:
            self._counterfactual_usd.inc(counterfactual_usd)
        if savings_usd > 0:
            self._savings_usd.inc(savings_usd)
        elif savings_usd < 0:
            self._overspend_usd.inc(-savings_usd)

        if route == "local->cloud":
            escalation = self._escalation_children.get(record.reason)
            if escalation is None:
                escalation = self._escalations.labels(record.reason or "none")
                self._escalation_children[record.reason] = escalation
            escalation.inc()
        if record.degraded is not None:
            degraded = self._degraded_children.get(record.degraded)
            if degraded is None:
                degraded = self._degraded.labels(record.degraded)
                self._degraded_children[record.degraded] = degraded
            degraded.inc()

        if record.cloud_attempts > 0:
            self._cloud_attempts.inc(record.cloud_attempts)
            if record.cloud_attempts > 1:
                self._cloud_retries.inc(record.cloud_attempts - 1)

    def bind(
        self,
        *,
        engine_status: EngineStatusSource,
        breaker_state: BreakerStateSource | None,
        ledger_stats: LedgerStatsSource | None,
    ) -> None:
        """Sources of live state, read at scrape time; None = not there (no cloud, no ledger).

        Binding again replaces the previous sources.
        """
        self._live.sources = _Sources(engine_status, breaker_state, ledger_stats)

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """The exposition body and its content type, negotiated from an Accept header."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


@dataclass(frozen=True)
class _Sources:
    engine_status: EngineStatusSource
    breaker_state: BreakerStateSource | None
    ledger_stats: LedgerStatsSource | None


class _LiveCollector:
    """Reads the bound sources on each scrape; emits nothing before bind().

    A source that raises is logged and its metrics are left out of that scrape:
    one broken callback must not take the request counters down with it.
    """

    def __init__(self) -> None:
        # Replaced whole by bind(), so a scrape sees the old or the new set, never a mix.
        self.sources: _Sources | None = None

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry rejects clashes with the request metrics.
        yield from _engine_families(None)
        yield from _cloud_families(None, None)
        yield from _ledger_families(None)

    def collect(self) -> Iterator[Metric]:
        sources = self.sources
        if sources is None:
            return
        status = _read("local engine status", sources.engine_status)
        if status is not None:
            yield from _engine_families(status)
        if sources.breaker_state is None:
            yield from _cloud_families(False, None)
        else:
            snapshot = _read("cloud circuit state", sources.breaker_state)
            yield from _cloud_families(True, snapshot)
        if sources.ledger_stats is not None:
            stats = _read("ledger stats", sources.ledger_stats)
            if stats is not None:
                yield from _ledger_families(stats)


def _read(what: str, source: Callable[[], _T]) -> _T | None:
    try:
        return source()
    except Exception:
        logger.warning(
            "metrics: reading the %s failed; left out of this scrape", what, exc_info=True
        )
        return None


def _gauge(name: str, documentation: str, value: float | None) -> GaugeMetricFamily:
    return GaugeMetricFamily(PREFIX + name, documentation, value=value)


_ENGINE_GAUGES: tuple[tuple[str, str, Callable[[EngineStatus], float]], ...] = (
    ("local_model_loaded", "1 when the local model is loaded.", lambda s: float(s.loaded)),
    (
        "local_requests_running",
        "Requests the local model is generating for now.",
        lambda s: s.running,
    ),
    ("local_requests_waiting", "Requests waiting for the local model.", lambda s: s.waiting),
    (
        "local_requests_max_waiting",
        "Requests that may wait while one generates; beyond that new ones get 503.",
        lambda s: s.max_waiting,
    ),
    (
        "local_decode_tokens_per_second",
        "Recent local decode speed (exponentially weighted); 0 until measured.",
        lambda s: s.tokens_per_second,
    ),
)


def _engine_families(status: EngineStatus | None) -> Iterator[Metric]:
    for name, documentation, read in _ENGINE_GAUGES:
        yield _gauge(name, documentation, None if status is None else read(status))


def _cloud_families(configured: bool | None, snapshot: dict[str, Any] | None) -> Iterator[Metric]:
    """configured None: names only (describe); True with no snapshot: the read failed."""
    yield _gauge(
        "cloud_configured",
        "1 when a cloud upstream is configured.",
        None if configured is None else float(configured),
    )
    if configured is False:
        return
    state = GaugeMetricFamily(
        PREFIX + "cloud_circuit_state",
        "Cloud circuit breaker: 1 for the current state (closed, half_open, open), 0 for others.",
        labels=("state",),
    )
    failures = GaugeMetricFamily(
        PREFIX + "cloud_consecutive_failures",
        "Consecutive failed cloud requests counted by the circuit breaker.",
    )
    if snapshot is not None:
        current = snapshot.get("state")
        for name in CIRCUIT_STATES:
            state.add_metric((name,), 1.0 if name == current else 0.0)
        failures.add_metric((), float(snapshot.get("consecutive_failures", 0)))
        yield state
        yield failures
    elif configured is None:
        yield state
        yield failures


def _ledger_families(stats: tuple[int, int] | None) -> Iterator[Metric]:
    yield _gauge(
        "ledger_queue_depth",
        "Ledger records waiting to be written.",
        None if stats is None else stats[0],
    )
    yield CounterMetricFamily(
        PREFIX + "ledger_dropped_records_total",
        "Ledger records dropped (queue full or write failed) since start.",
        value=None if stats is None else stats[1],
    )
