"""The cloud upstream: an OpenAI-compatible HTTP client that survives a bad network.

Time limits (connect, per-chunk read, total deadline), retries with jittered
backoff before the first byte, a circuit breaker, and errors mapped onto the
gateway's tree (:mod:`gateway.errors`).
"""

from gateway.cloud.client import CloudClient, CloudStream
from gateway.cloud.results import CloudResult, CloudUsage

__all__ = ["CloudClient", "CloudResult", "CloudStream", "CloudUsage"]
