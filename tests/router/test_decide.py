"""Policy.decide: model ids, pins, rules in order, default."""

from __future__ import annotations

import pytest

from router import Decision, Message, Policy, PromptSize, RequestFacts, parse_policy
from tests.router.facts import facts

RULES = """
rules:
  - name: busy
    route: cloud
    match: {local_wait_over_seconds: 2.5}
  - name: long-prompt
    route: cloud
    match: {prompt_tokens_over: 1000}
  - name: long-answer
    route: local_then_check
    match: {max_tokens_over: 500}
  - name: shouting
    route: local
    match: {regex: 'HELLO+\\b'}
  - name: maths
    route: cloud
    match: {keywords: [step by step, integral, c++]}
  - name: history-mentions-secret
    route: local
    match: {keywords: [secret], scope: all}
default: local_then_check
"""


@pytest.fixture
def policy() -> Policy:
    return parse_policy(RULES)


def test_no_rule_matches_gives_the_default(policy: Policy) -> None:
    assert policy.decide(facts("What is the capital of France?")) == Decision(
        "local_then_check", "default"
    )


def test_default_route_is_configurable() -> None:
    assert parse_policy("default: cloud").decide(facts()) == Decision("cloud", "default")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"local_wait_seconds": 2.6}, Decision("cloud", "busy")),
        ({"local_wait_seconds": 2.5}, Decision("local_then_check", "default")),
        ({"prompt_tokens": 1001}, Decision("cloud", "long-prompt")),
        ({"prompt_tokens": 1000}, Decision("local_then_check", "default")),
        ({"max_tokens": 501}, Decision("local_then_check", "long-answer")),
        ({"max_tokens": 500}, Decision("local_then_check", "default")),
        # A client that did not set max_tokens is not asking for a long answer.
        ({"max_tokens": None}, Decision("local_then_check", "default")),
    ],
)
def test_numeric_conditions_are_strictly_over(
    policy: Policy, kwargs: dict[str, float], expected: Decision
) -> None:
    assert policy.decide(facts(**kwargs)) == expected


def test_regex_is_case_insensitive(policy: Policy) -> None:
    assert policy.decide(facts("well hellooo there")) == Decision("local", "shouting")


@pytest.mark.parametrize(
    "text",
    [
        "Solve it STEP BY STEP please",
        "step by\nstep",  # whitespace inside a phrase matches any whitespace
        "what is the integral of x?",
        "help me with c++ templates",  # no word boundary needed after '+'
    ],
)
def test_keywords_match_whole_words_case_insensitively(policy: Policy, text: str) -> None:
    assert policy.decide(facts(text)) == Decision("cloud", "maths")


@pytest.mark.parametrize("text", ["integrals of motion", "the integrality gap", "stepbystep"])
def test_keywords_do_not_match_inside_words(policy: Policy, text: str) -> None:
    assert policy.decide(facts(text)).reason == "default"


def test_scope_last_user_ignores_earlier_messages(policy: Policy) -> None:
    history = (Message("user", "compute an integral"), Message("assistant", "ok"))
    assert policy.decide(facts("thanks", history=history)) == Decision(
        "local_then_check", "default"
    )


def test_scope_all_searches_every_message(policy: Policy) -> None:
    assert policy.decide(facts("thanks", system="The secret is 42")) == Decision(
        "local", "history-mentions-secret"
    )


def test_first_matching_rule_wins(policy: Policy) -> None:
    busy_and_long = facts("integral", local_wait_seconds=10, prompt_tokens=5000)
    assert policy.decide(busy_and_long) == Decision("cloud", "busy")
    assert policy.decide(facts("integral", prompt_tokens=5000)) == Decision("cloud", "long-prompt")


def test_conditions_in_one_match_are_anded() -> None:
    policy = parse_policy(
        """
        rules:
          - name: long-maths
            route: cloud
            match: {prompt_tokens_over: 100, keywords: [integral]}
        """
    )
    assert policy.decide(facts("integral", prompt_tokens=101)).reason == "long-maths"
    assert policy.decide(facts("integral", prompt_tokens=50)).reason == "default"
    assert policy.decide(facts("sum", prompt_tokens=101)).reason == "default"


def test_cloud_rules_do_not_depend_on_a_configured_cloud(policy: Policy) -> None:
    # The gateway degrades; the router reports what the policy says.
    decision = policy.decide(facts(prompt_tokens=5000, cloud_configured=False))
    assert decision == Decision("cloud", "long-prompt")


def test_model_pins_skip_the_rules(policy: Policy) -> None:
    long = {"prompt_tokens": 5000}
    assert policy.decide(facts(model="local", **long)) == Decision("local", "model-pinned-local")
    assert policy.decide(facts(model="cloud")) == Decision("cloud", "model-pinned-cloud")


def test_unknown_model_is_none(policy: Policy) -> None:
    assert policy.decide(facts(model="gpt-4o")) is None


def test_cloud_id_is_unknown_without_a_cloud(policy: Policy) -> None:
    assert policy.decide(facts(model="cloud", cloud_configured=False)) is None
    assert policy.model_ids(cloud_configured=False) == ["hybrid", "local"]
    assert policy.model_ids(cloud_configured=True) == ["hybrid", "local", "cloud"]


ALIASES = """
models:
  routed: auto
  local: edge
  cloud: big
  aliases: {gpt-4o-mini: routed, tiny: local, gpt-4o: cloud}
rules:
  - name: long-prompt
    route: cloud
    match: {prompt_tokens_over: 1000}
"""


def test_aliases_resolve_to_their_targets() -> None:
    policy = parse_policy(ALIASES)
    long = {"prompt_tokens": 5000}
    assert policy.decide(facts(model="gpt-4o-mini", **long)).reason == "long-prompt"
    assert policy.decide(facts(model="auto", **long)).reason == "long-prompt"
    assert policy.decide(facts(model="tiny", **long)) == Decision("local", "model-pinned-local")
    assert policy.decide(facts(model="gpt-4o")) == Decision("cloud", "model-pinned-cloud")
    # The default ids are gone once renamed.
    assert policy.decide(facts(model="hybrid")) is None
    assert policy.decide(facts(model="local")) is None


def test_aliases_to_the_cloud_need_a_cloud() -> None:
    policy = parse_policy(ALIASES)
    assert policy.decide(facts(model="gpt-4o", cloud_configured=False)) is None
    assert policy.model_ids(cloud_configured=False) == ["auto", "edge", "gpt-4o-mini", "tiny"]
    assert policy.model_ids(cloud_configured=True) == [
        "auto",
        "edge",
        "big",
        "gpt-4o-mini",
        "tiny",
        "gpt-4o",
    ]


def test_legacy_completion_is_one_user_message() -> None:
    policy = parse_policy("rules: [{name: k, route: cloud, match: {keywords: [integral]}}]")
    prompt = RequestFacts(
        model="hybrid",
        messages=(Message("user", "The integral of x is"),),
        prompt=PromptSize.counted(6),
        max_tokens=16,
        local_wait_seconds=0.0,
        cloud_configured=False,
    )
    assert policy.decide(prompt) == Decision("cloud", "k")


def test_decision_keeps_positional_construction() -> None:
    decision = Decision("local", "x")
    assert decision.cloud_allowed is True
    assert decision.privacy_match is None


def test_policy_is_immutable() -> None:
    policy = parse_policy("default: local")
    with pytest.raises(ValueError, match="frozen"):
        policy.default = "cloud"


def test_model_copy_rebuilds_what_was_compiled() -> None:
    policy = parse_policy(RULES)
    copy = policy.model_copy(update={"default": "cloud", "models": {"routed": "auto"}})
    assert copy.decide(facts(model="auto")) == Decision("cloud", "default")
    assert copy.decide(facts(model="hybrid")) is None
    assert policy.decide(facts()) == Decision("local_then_check", "default")
    with pytest.raises(ValueError, match="default"):
        policy.model_copy(update={"default": "sideways"})
