"""A circuit breaker for the cloud upstream: stop calling it while it is down.

States, derived from ``opened_at`` and the clock so nothing needs a timer::

    closed     calls go through; ``failure_threshold`` consecutive failed requests open it
    open       calls fail fast with CloudUnavailableError until the cool-down has passed
    half_open  one probe request goes through: success closes, failure re-opens

A request counts once, after its retries: the upstream was *unreachable or
broken* (failure), it *answered* (success, including the client's own 4xx and
429s, which prove the upstream is up), or neither (the client left early,
the local pool was saturated).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gateway.errors import CloudUnavailableError

logger = logging.getLogger(__name__)

# While a probe is in flight other requests are refused; its answer rarely takes
# longer than this, so that is when they should come back.
_PROBE_RETRY_AFTER_S = 1.0


@dataclass(frozen=True)
class Permit:
    """Leave to make one request; ``probe`` marks the single half-open trial."""

    probe: bool


class CircuitBreaker:
    def __init__(
        self, *, failure_threshold: int, cooldown_s: float, clock: Callable[[], float]
    ) -> None:
        self._threshold = failure_threshold
        self._cooldown_s = cooldown_s
        self._clock = clock
        self._consecutive_failures = 0
        self._opened_at: float | None = None
        self._probe_in_flight = False

    def _retry_in(self) -> float:
        assert self._opened_at is not None
        return max(0.0, self._opened_at + self._cooldown_s - self._clock())

    @property
    def state(self) -> str:
        if self._opened_at is None:
            return "closed"
        return "open" if self._retry_in() > 0 else "half_open"

    def check(self) -> None:
        """Raise CloudUnavailableError if a request would be refused now (changes nothing)."""
        state = self.state
        if state == "open":
            raise CloudUnavailableError(
                "the cloud upstream is failing; calls are paused (circuit open)",
                retry_after_seconds=self._retry_in(),
            )
        if state == "half_open" and self._probe_in_flight:
            raise CloudUnavailableError(
                "the cloud upstream is failing; a probe request is checking it",
                retry_after_seconds=_PROBE_RETRY_AFTER_S,
            )

    def acquire(self) -> Permit:
        self.check()
        if self.state == "half_open":
            self._probe_in_flight = True
            return Permit(probe=True)
        return Permit(probe=False)

    def record_success(self, permit: Permit) -> None:
        if permit.probe or self._opened_at is None:
            # A straggler that started before the circuit opened proves little;
            # only the probe may close it.
            if permit.probe:
                logger.info("cloud circuit closed: the probe request succeeded")
            self._consecutive_failures = 0
            self._opened_at = None
            self._probe_in_flight = False

    def record_failure(self, permit: Permit) -> None:
        if permit.probe:
            self._consecutive_failures += 1
            self._opened_at = self._clock()
            self._probe_in_flight = False
            logger.warning(
                "cloud circuit re-opened: the probe request failed; failing fast for %.1fs",
                self._cooldown_s,
            )
        elif self._opened_at is None:
            self._consecutive_failures += 1
            if self._consecutive_failures >= self._threshold:
                self._opened_at = self._clock()
                logger.warning(
                    "cloud circuit opened after %d consecutive failures; failing fast for %.1fs",
                    self._consecutive_failures,
                    self._cooldown_s,
                )

    def release(self, permit: Permit) -> None:
        """The request ended without telling us anything about the upstream."""
        if permit.probe:
            self._probe_in_flight = False

    def snapshot(self) -> dict[str, Any]:
        state = self.state
        details: dict[str, Any] = {
            "state": state,
            "consecutive_failures": self._consecutive_failures,
            "failure_threshold": self._threshold,
        }
        if state == "open":
            details["retry_in_s"] = round(self._retry_in(), 3)
        elif state == "half_open":
            details["probe_in_flight"] = self._probe_in_flight
        return details
