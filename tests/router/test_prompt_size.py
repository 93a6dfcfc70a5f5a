"""PromptSize: a bound settles a length condition, or the exact count must be known."""

from __future__ import annotations

import pytest

from router import PromptSize, parse_policy


def test_a_bound_at_or_under_the_limit_settles_it_without_a_count() -> None:
    assert PromptSize(upper_bound=40).over(40) is False
    assert PromptSize(upper_bound=12).over(40) is False


def test_a_bound_over_the_limit_needs_the_count() -> None:
    with pytest.raises(LookupError, match="counted"):
        PromptSize(upper_bound=41).over(40)
    assert PromptSize(upper_bound=41, exact=41).over(40) is True
    assert PromptSize(upper_bound=400, exact=40).over(40) is False
    assert PromptSize.counted(7) == PromptSize(7, 7)


def test_the_policy_lists_its_length_thresholds() -> None:
    policy = parse_policy(
        """
rules:
  - {name: a, route: cloud, match: {prompt_tokens_over: 900}}
  - {name: b, route: cloud, match: {keywords: [x]}}
  - {name: c, route: local, match: {prompt_tokens_over: 0, keywords: [y]}}
  - {name: d, route: cloud, match: {prompt_tokens_over: 900, max_tokens_over: 5}}
"""
    )
    assert policy.prompt_token_thresholds() == (0, 900)
    assert parse_policy("rules: []").prompt_token_thresholds() == ()
