"""When to try a cloud request again, and how long to wait first.

Exponential backoff with full jitter (a uniform draw below a doubling cap):
concurrent gateways that failed together do not retry together. A server's
``Retry-After`` wins over the backoff, but only within the retry budget; a
longer one is the client's to honour, not ours.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime


def parse_retry_after(headers: Mapping[str, str], *, now: float) -> float | None:
    """Seconds the server asks us to wait, or None when it does not say (or says nonsense).

    ``now`` is wall-clock time (``time.time()``), for the HTTP-date form.
    ``retry-after-ms`` is OpenAI's finer-grained variant and wins when present.
    """
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            seconds = float(value) * scale
        except ValueError:
            continue
        # "inf" or "nan" would turn any comparison with the budget into nonsense.
        return max(0.0, seconds) if math.isfinite(seconds) else None
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # "-0000" parses as naive, but an HTTP date is always UTC.
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int
    backoff_initial_s: float
    backoff_max_s: float
    budget_s: float

    def delay(
        self, *, attempts: int, retry_after: float | None, waited: float, rng: random.Random
    ) -> float | None:
        """Seconds to wait before the next attempt, or None to give up.

        ``attempts`` were made so far and ``waited`` seconds spent between them.
        """
        if attempts >= self.max_attempts:
            return None
        budget_left = self.budget_s - waited
        if retry_after is not None:
            return retry_after if retry_after <= budget_left else None
        if budget_left <= 0:
            return None
        # min() before the power would still overflow for absurd attempt counts.
        cap = min(self.backoff_max_s, self.backoff_initial_s * 2.0 ** min(attempts - 1, 60))
        return min(rng.uniform(0.0, cap), budget_left)
