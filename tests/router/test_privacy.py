"""The privacy floor: detectors, Luhn, custom patterns, scope, precedence."""

from __future__ import annotations

import pytest

from router import Decision, Message, parse_policy
from router.privacy import BUILT_IN, luhn_valid
from tests.router.facts import facts

ALL_DETECTORS = """
privacy:
  detectors: [email, phone, credit_card, iban]
  keywords:
    secrets: [password, api key]
  patterns:
    employee-id: '\\bEMP-\\d{6}\\b'
rules:
  - name: everything-to-cloud
    route: cloud
    match: {prompt_tokens_over: 0}
"""


def _floor(name: str) -> Decision:
    return Decision("local", "privacy-floor", cloud_allowed=False, privacy_match=name)


@pytest.mark.parametrize(
    ("text", "name"),
    [
        ("mail jane.doe+news@mail.example.co.uk today", "email"),
        ("call me on +1 (555) 123-4567", "phone"),
        ("my number is 555-123-4567, call twice", "phone"),
        ("ring 020 7946 0958", "phone"),
        ("appelle le 06 12 34 56 78", "phone"),
        ("+49 30 1234567", "phone"),
        ("card 4111 1111 1111 1111 exp 12/29", "credit_card"),
        ("4111-1111-1111-1111", "credit_card"),
        ("5555555555554444", "credit_card"),
        ("pay to DE89 3704 0044 0532 0130 00 please", "iban"),
        ("GB82WEST12345698765432", "iban"),
        ("ticket for emp-123456", "employee-id"),  # patterns are case-insensitive
        ("my PASSWORD is hunter2", "secrets"),
        ("the API\nkey is abc", "secrets"),
    ],
)
def test_each_detector_pins_the_request_local(text: str, name: str) -> None:
    policy = parse_policy(ALL_DETECTORS)
    assert policy.decide(facts(text)) == _floor(name)


@pytest.mark.parametrize(
    "text",
    [
        "what happened on 2024-01-15?",
        "upgrade to version 10.0.19041",
        "ping 192.168.1.1",
        "the numbers 0.5 0.25 0.125",
        "ISBN 978-0-306-40615-7",
        "order 1234567890",
        "the sum 1234 5678 9012 3456 fails Luhn",
        "4111 1111 1111 1112",
        "DE89 3704 0044 0532 0130 01",
        "user@localhost is not an address",
        "EMP-1234567 is one digit too long",
        "+5 points",
        "passwords are hashed",  # keywords are whole words
    ],
)
def test_look_alikes_do_not_match(text: str) -> None:
    policy = parse_policy(ALL_DETECTORS)
    assert policy.decide(facts(text)) == Decision("cloud", "everything-to-cloud")


@pytest.mark.parametrize(
    ("digits", "valid"),
    [
        ("4111111111111111", True),
        ("79927398713", True),
        ("378282246310005", True),
        ("4111111111111112", False),
        ("79927398710", False),
        ("1234567812345678", False),
    ],
)
def test_luhn(digits: str, valid: bool) -> None:
    assert luhn_valid(digits) is valid


def test_card_followed_by_another_number_still_matches() -> None:
    assert BUILT_IN["credit_card"].found_in("4111 1111 1111 1111 2")


def test_detectors_stay_linear_on_long_runs() -> None:
    # A scan that backtracked from every position would take minutes here.
    blob = "a" * 200_000 + " " + "9" * 200_000
    assert not any(detector.found_in(blob) for detector in BUILT_IN.values())


def test_floor_overrides_a_cloud_pin_and_a_local_pin() -> None:
    policy = parse_policy(ALL_DETECTORS)
    assert policy.decide(facts("me@example.com", model="cloud")) == _floor("email")
    assert policy.decide(facts("me@example.com", model="local")) == _floor("email")


def test_unknown_model_is_still_unknown() -> None:
    policy = parse_policy(ALL_DETECTORS)
    assert policy.decide(facts("me@example.com", model="nope")) is None


def test_only_switched_on_detectors_run() -> None:
    policy = parse_policy("privacy: {detectors: [phone]}")
    assert policy.decide(facts("me@example.com")) == Decision("local_then_check", "default")


def test_no_privacy_section_means_no_floor() -> None:
    assert parse_policy("{}").decide(facts("me@example.com")).route == "local_then_check"


def test_first_listed_detector_names_the_match() -> None:
    text = "me@example.com or 4111 1111 1111 1111"
    policy = parse_policy("privacy: {detectors: [credit_card, email]}")
    assert policy.decide(facts(text)) == _floor("credit_card")


def test_scope_all_scans_the_whole_conversation() -> None:
    history = (Message("user", "I am me@example.com"), Message("assistant", "Hi!"))
    policy = parse_policy("privacy: {detectors: [email]}")
    assert policy.decide(facts("and now?", history=history)) == _floor("email")
    assert policy.decide(facts("hello", system="Contact: help@example.com")) == _floor("email")


def test_scope_last_user_ignores_the_rest() -> None:
    history = (Message("user", "I am me@example.com"), Message("assistant", "Hi!"))
    policy = parse_policy("privacy: {detectors: [email], scope: last_user}")
    assert policy.decide(facts("and now?", history=history)).route == "local_then_check"
    assert policy.decide(facts("me@example.com", history=history)) == _floor("email")


def test_the_matched_text_is_never_in_the_decision() -> None:
    decision = parse_policy(ALL_DETECTORS).decide(facts("EMP-654321"))
    assert decision is not None
    assert "654321" not in repr(decision)


def test_built_ins_then_keywords_then_patterns() -> None:
    policy = parse_policy(
        "privacy: {patterns: {a-pattern: 'zebra'}, keywords: {a-word: [zebra]}, detectors: [email]}"
    )
    assert policy.decide(facts("zebra")) == _floor("a-word")
    assert policy.decide(facts("zebra me@example.com")) == _floor("email")


def test_mask_replaces_what_every_detector_finds() -> None:
    from router import parse_policy

    policy = parse_policy(
        "privacy:\n"
        "  detectors: [email, phone, credit_card]\n"
        "  keywords: {project: [Bluebird]}\n"
        "  patterns: {employee: 'EMP-[0-9]{6}'}\n"
        "  scope: last_user\n"
    )
    text = (
        "Mail jane@x.org or call +1 415 555 0100, card 4111 1111 1111 1111, "
        "not 1234 5678 9012 3456; BLUEBIRD EMP-123456"
    )
    assert policy.privacy.mask(text) == (
        "Mail [email] or call [phone], card [credit_card], "
        "not 1234 5678 9012 3456; [project] [employee]"
    )
    assert policy.privacy.mask("nothing to hide") == "nothing to hide"
