"""Prometheus metrics: counters fed once per finished request, gauges read at scrape time.

Two kinds of source, kept apart so the request path stays cheap:

    observe()   one call per finished request (a LedgerRecord and its costs) on
                the event loop: adds to plain Python numbers (dicts, bucket
                lists), which a custom collector turns into counter and
                histogram families when /metrics is scraped
    bind()      callbacks for live state (local queue, cloud circuit, ledger
                queue), read by another collector at scrape time

Why not prometheus_client's Counter and Histogram: each increment or
observation takes a lock and walks the label machinery, about a dozen per
request; counting in plain numbers costs a third of that (bench/instructions.py
--no-metrics) and a scrape sees every request observed before it. Both
observe() and the scrape run on the event loop, so nothing here needs a lock.

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
import time
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.samples import Sample

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

#: route, reason ("none" for None, as the label says), status, endpoint
_RequestKey = tuple[str, str, int, str]
_T = TypeVar("_T")


class _Histogram:
    """One route's observations: a count per bucket (not cumulative), the sum."""

    __slots__ = ("bounds", "counts", "les", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        # The "le" label values as the client library writes them: 0.01, 1.0, +Inf.
        self.les = (*(repr(float(bound)) for bound in bounds), "+Inf")
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0

    def observe(self, value: float) -> None:
        # bisect_left: a value equal to a bound belongs to that bound's bucket (le).
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, float]]:
        buckets, total = [], 0
        for le, count in zip(self.les, self.counts, strict=True):
            total += count
            buckets.append((le, float(total)))
        return buckets


class _Counts:
    """Every request counter and histogram, in plain numbers."""

    def __init__(self) -> None:
        self.created = time.time()
        self.requests: dict[_RequestKey, int] = {}
        self.ttft = {route: _Histogram(TTFT_BUCKETS) for route in ROUTES}
        self.duration = {route: _Histogram(DURATION_BUCKETS) for route in ROUTES}
        self.local_prompt = self.local_completion = 0
        self.cloud_prompt = self.cloud_completion = 0
        self.cloud_usd = self.local_usd = self.counterfactual_usd = 0.0
        self.savings_usd = self.overspend_usd = 0.0
        self.escalations: dict[str, int] = {}
        self.degraded: dict[str, int] = {}
        self.cloud_attempts = self.cloud_retries = 0


class GatewayMetrics:
    def __init__(self) -> None:
        self._counts = _Counts()
        self._registry = CollectorRegistry()
        self._registry.register(_RequestCollector(self._counts))
        self._live = _LiveCollector()
        self._registry.register(self._live)

    @property
    def registry(self) -> CollectorRegistry:
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

        Raises ValueError (before counting anything) for a negative cost or a
        route that is not one of ROUTES.
        """
        if cloud_usd < 0 or local_usd < 0 or counterfactual_usd < 0:
            raise ValueError("costs must not be negative")
        route = record.route or "none"
        ttft = self._counts.ttft.get(route)
        if ttft is None:
            raise ValueError(f"unknown route {route!r}")
        counts = self._counts
        reason = record.reason or "none"
        key = (route, reason, record.status, record.endpoint)
        counts.requests[key] = counts.requests.get(key, 0) + 1
        if record.ttft_seconds is not None:
            ttft.observe(record.ttft_seconds)
        counts.duration[route].observe(record.total_seconds)

        counts.local_prompt += record.local_prompt_tokens
        counts.local_completion += record.local_completion_tokens
        counts.cloud_prompt += record.cloud_prompt_tokens
        counts.cloud_completion += record.cloud_completion_tokens

        counts.cloud_usd += cloud_usd
        counts.local_usd += local_usd
        counts.counterfactual_usd += counterfactual_usd
        if savings_usd > 0:
            counts.savings_usd += savings_usd
        elif savings_usd < 0:
            counts.overspend_usd -= savings_usd

        if route == "local->cloud":
            counts.escalations[reason] = counts.escalations.get(reason, 0) + 1
        if record.degraded is not None:
            counts.degraded[record.degraded] = counts.degraded.get(record.degraded, 0) + 1
        if record.cloud_attempts > 0:
            counts.cloud_attempts += record.cloud_attempts
            counts.cloud_retries += record.cloud_attempts - 1

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
        return encoder(self._registry), content_type


class _RequestCollector:
    """The request counters and histograms, built from the plain numbers at each scrape."""

    def __init__(self, counts: _Counts) -> None:
        self._counts = counts

    def describe(self) -> Iterator[Metric]:
        # Names only, so the registry rejects clashes with the live gauges.
        return self._families()

    def collect(self) -> Iterator[Metric]:
        return self._families()

    def _families(self) -> Iterator[Metric]:
        counts, created = self._counts, self._counts.created

        def counter(
            name: str, documentation: str, labels: tuple[str, ...] = ()
        ) -> CounterMetricFamily:
            return CounterMetricFamily(PREFIX + name, documentation, labels=labels)

        def one(name: str, documentation: str, value: float) -> CounterMetricFamily:
            family = counter(name, documentation)
            family.add_metric((), value, created=created)
            return family

        requests = counter(
            "requests_total",
            "Finished requests by route, deciding rule, HTTP status and endpoint.",
            ("route", "reason", "status", "endpoint"),
        )
        # list(): a snapshot, should a scrape ever run off the event loop (a test's thread).
        for (route, reason, status, endpoint), value in list(counts.requests.items()):
            labels = (route, reason, str(status), endpoint)
            requests.add_metric(labels, value, created=created)
        yield requests

        yield _histogram(
            "time_to_first_token_seconds",
            "Seconds from arrival to the first byte of the response body.",
            counts.ttft,
            created,
        )
        yield _histogram(
            "request_duration_seconds",
            "Seconds from arrival to the last byte (or the failure or disconnect).",
            counts.duration,
            created,
        )

        tokens = counter(
            "tokens_total",
            "Tokens processed, by the side that processed them and kind.",
            ("side", "kind"),
        )
        for side_kind, value in (
            (("local", "prompt"), counts.local_prompt),
            (("local", "completion"), counts.local_completion),
            (("cloud", "prompt"), counts.cloud_prompt),
            (("cloud", "completion"), counts.cloud_completion),
        ):
            tokens.add_metric(side_kind, value, created=created)
        yield tokens

        yield one(
            "cloud_cost_usd_total", "Cloud spend in USD at configured prices.", counts.cloud_usd
        )
        yield one(
            "local_cost_usd_total",
            "Estimated cost in USD of the local model's work.",
            counts.local_usd,
        )
        yield one(
            "all_cloud_counterfactual_usd_total",
            "USD the same requests would have cost had all of them gone to the cloud.",
            counts.counterfactual_usd,
        )
        # Savings are negative when a request costs more than all-cloud would have
        # (an escalation pays for the local attempt and the cloud answer). A counter
        # cannot go down, and a gauge that accumulates restarts from 0 on every
        # restart, which rate()/increase() cannot correct on a gauge. Two counters
        # keep resets handled and both sides visible; net savings over a window is
        # increase(savings_usd_total) - increase(overspend_usd_total).
        yield one(
            "savings_usd_total",
            "Sum of positive per-request savings against all-cloud, USD.",
            counts.savings_usd,
        )
        yield one(
            "overspend_usd_total",
            "Sum of negative per-request savings against all-cloud, as a positive USD amount.",
            counts.overspend_usd,
        )

        escalations = counter(
            "escalations_total",
            "Answers escalated from the local model to the cloud (route local->cloud), "
            "by deciding rule.",
            ("reason",),
        )
        for reason, value in list(counts.escalations.items()):
            escalations.add_metric((reason,), value, created=created)
        yield escalations
        degraded = counter(
            "degraded_total",
            "Answers that are not what the policy wanted, by why (cloud-unavailable, "
            "cloud-error, budget-exhausted).",
            ("why",),
        )
        for why, value in list(counts.degraded.items()):
            degraded.add_metric((why,), value, created=created)
        yield degraded

        yield one(
            "cloud_attempts_total",
            "HTTP attempts made to the cloud upstream, retries included.",
            counts.cloud_attempts,
        )
        yield one(
            "cloud_retries_total",
            "Cloud attempts beyond the first of their request.",
            counts.cloud_retries,
        )


def _histogram(
    name: str, documentation: str, by_route: dict[str, _Histogram], created: float
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(PREFIX + name, documentation, labels=("route",))
    for route, histogram in by_route.items():
        family.add_metric((route,), histogram.cumulative(), histogram.sum)
        # add_metric takes no created time; the client library's own histograms export it.
        family.samples.append(Sample(family.name + "_created", {"route": route}, created))
    return family


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
