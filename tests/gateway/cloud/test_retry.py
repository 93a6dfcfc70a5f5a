from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from gateway.cloud.retry import RetryPolicy, parse_retry_after

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({}, None),
        ({"retry-after": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": "-4"}, 0.0),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"retry-after": "Wed, 01 Jan 2030 12:00:42 GMT"}, 42.0),
        ({"retry-after": "Wed, 01 Jan 2030 12:00:42 -0000"}, 42.0),
        ({"retry-after": "Tue, 31 Dec 2029 12:00:00 GMT"}, 0.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "inf"}, None),
        ({"retry-after": "nan"}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


def test_http_date_round_trip() -> None:
    when = datetime(2030, 1, 1, 12, 1, 0, tzinfo=UTC)
    header = format_datetime(when, usegmt=True)
    assert parse_retry_after({"retry-after": header}, now=NOW) == 60.0


POLICY = RetryPolicy(max_attempts=5, backoff_initial_s=0.5, backoff_max_s=2.0, budget_s=10.0)


def test_full_jitter_stays_under_a_doubling_cap() -> None:
    rng = random.Random(1)
    for attempts, cap in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 2.0)]:
        draws = [
            POLICY.delay(attempts=attempts, retry_after=None, waited=0, rng=rng) for _ in range(200)
        ]
        assert all(d is not None and 0 <= d <= cap for d in draws)
        # Full jitter spreads over the whole range, not just its top.
        assert min(d for d in draws if d is not None) < cap / 4


def test_gives_up_after_max_attempts() -> None:
    rng = random.Random(1)
    assert POLICY.delay(attempts=5, retry_after=None, waited=0, rng=rng) is None
    assert POLICY.delay(attempts=5, retry_after=0.1, waited=0, rng=rng) is None


def test_budget_bounds_waiting() -> None:
    rng = random.Random(1)
    assert POLICY.delay(attempts=1, retry_after=None, waited=10, rng=rng) is None
    delay = POLICY.delay(attempts=3, retry_after=None, waited=9.9, rng=rng)
    assert delay is not None and delay <= 0.1 + 1e-9


def test_retry_after_wins_within_the_budget_only() -> None:
    rng = random.Random(1)
    assert POLICY.delay(attempts=1, retry_after=7, waited=0, rng=rng) == 7
    assert POLICY.delay(attempts=1, retry_after=7, waited=4, rng=rng) is None
