"""The policies in deploy/policies/: they load, and decide as their comments say."""

from __future__ import annotations

from pathlib import Path

import pytest

from router import Decision, Policy, RequestFacts, default_policy, load_policy
from tests.router.facts import facts

POLICIES = Path(__file__).resolve().parents[2] / "deploy" / "policies"


def _load(name: str) -> Policy:
    return load_policy(POLICIES / name)


def test_every_shipped_policy_is_tested() -> None:
    shipped = sorted(path.name for path in POLICIES.glob("*.yaml"))
    assert shipped == [
        "cost-saver.yaml",
        "default.yaml",
        "latency-first.yaml",
        "privacy-first.yaml",
    ]


def test_default_policy_is_the_shipped_default() -> None:
    assert default_policy() == _load("default.yaml")
    assert default_policy() != Policy()


@pytest.mark.parametrize(
    ("request_facts", "expected"),
    [
        (facts("What is the capital of France?"), Decision("local_then_check", "default")),
        (facts("Solve x^2 = 4 step by step"), Decision("cloud", "reasoning")),
        (facts("Write a Python script that renames files"), Decision("cloud", "code-topic")),
        (facts("Why does def f(x): return x fail?"), Decision("cloud", "code")),
        (facts("What does DEF mean in sports?"), Decision("local_then_check", "default")),
        (facts("Fix this:\n```\nx = 1\n```"), Decision("cloud", "code")),
        (facts(prompt_tokens=2000), Decision("cloud", "long-prompt")),
        (facts(max_tokens=2048), Decision("cloud", "long-answer")),
        (facts(local_wait_seconds=6.0), Decision("cloud", "local-overloaded")),
        (
            facts("Email bob@example.com and solve it step by step"),
            Decision("local", "privacy-floor", cloud_allowed=False, privacy_match="email"),
        ),
        (
            facts("Card 4111 1111 1111 1111", model="cloud"),
            Decision("local", "privacy-floor", cloud_allowed=False, privacy_match="credit_card"),
        ),
        (facts("Solve it", model="local"), Decision("local", "model-pinned-local")),
        (facts("Solve it", model="cloud", cloud_configured=False), None),
    ],
)
def test_default(request_facts: RequestFacts, expected: Decision | None) -> None:
    assert default_policy().decide(request_facts) == expected
    policy = default_policy()
    assert (policy.on_cloud_unavailable, policy.gate.signal) == ("degrade", "min")


@pytest.mark.parametrize(
    ("request_facts", "expected"),
    [
        (facts("Solve x^2 = 4 step by step"), Decision("local", "default")),
        (facts(prompt_tokens=3500), Decision("cloud", "prompt-too-long-for-local")),
        (facts("#cloud write me a sonnet"), Decision("cloud", "user-asked-for-cloud")),
        (
            facts("my password is hunter2 #cloud"),
            Decision("local", "privacy-floor", False, "credential-words"),
        ),
        (facts("the server is at 10.0.0.12"), Decision("local", "privacy-floor", False, "ipv4")),
        (
            facts("key AKIAIOSFODNN7EXAMPLE"),
            Decision("local", "privacy-floor", False, "aws-access-key"),
        ),
        (
            facts("Authorization: Bearer abcdefghijklmnopqrstuvwxyz"),
            Decision("local", "privacy-floor", False, "bearer-token"),
        ),
        (
            facts("-----BEGIN RSA PRIVATE KEY-----\nMIIE"),
            Decision("local", "privacy-floor", False, "credential-words"),
        ),
        (
            facts("use sk-abcdefghijklmnop1234 for auth"),
            Decision("local", "privacy-floor", False, "api-key"),
        ),
        (facts("the patient's results"), Decision("local", "privacy-floor", False, "health")),
        (
            facts("summarise", system="CONFIDENTIAL: Q3 numbers"),
            Decision("local", "privacy-floor", False, "confidential"),
        ),
        (facts("SSN 123-45-6789"), Decision("local", "privacy-floor", False, "us-ssn")),
        (
            facts("IBAN GB82 WEST 1234 5698 7654 32"),
            Decision("local", "privacy-floor", False, "iban"),
        ),
        (
            facts("my driver's license is lost"),
            Decision("local", "privacy-floor", False, "id-document"),
        ),
    ],
)
def test_privacy_first(request_facts: RequestFacts, expected: Decision) -> None:
    policy = _load("privacy-first.yaml")
    assert policy.decide(request_facts) == expected
    assert policy.on_cloud_unavailable == "fail"


@pytest.mark.parametrize(
    ("request_facts", "expected"),
    [
        (facts("Solve x^2 = 4 step by step"), Decision("local_then_check", "hard-looking")),
        (facts(local_wait_seconds=10.0), Decision("local_then_check", "default")),
        (facts(local_wait_seconds=31.0), Decision("cloud", "local-overloaded")),
        (facts(max_tokens=2048), Decision("local_then_check", "default")),
        (facts(prompt_tokens=3500), Decision("cloud", "prompt-too-long-for-local")),
        (facts("hi", model="gpt-4o-mini"), Decision("local_then_check", "default")),
    ],
)
def test_cost_saver(request_facts: RequestFacts, expected: Decision) -> None:
    policy = _load("cost-saver.yaml")
    assert policy.decide(request_facts) == expected
    # Lenient: a token at e^-4 passes here and escalates under the default policy.
    answer = [-0.1, -4.0, -0.2]
    assert policy.gate.judge(answer).escalate is False
    assert default_policy().gate.judge(answer).escalate is True


@pytest.mark.parametrize(
    ("request_facts", "expected"),
    [
        (facts("hi"), Decision("local_then_check", "default")),
        (facts(local_wait_seconds=0.6), Decision("cloud", "local-busy")),
        (facts(max_tokens=300), Decision("cloud", "long-generation")),
        (facts(max_tokens=200), Decision("local_then_check", "default")),
        (facts(prompt_tokens=900), Decision("cloud", "long-prompt")),
    ],
)
def test_latency_first(request_facts: RequestFacts, expected: Decision) -> None:
    policy = _load("latency-first.yaml")
    assert policy.decide(request_facts) == expected
    assert policy.gate.judge([-0.1, -2.8]).escalate is True
    assert policy.gate.holdback_tokens == 8
    assert policy.gate.below_hard_floor(-7.5)
