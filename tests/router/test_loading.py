"""Reading policy files: every problem is '<file>: <where>: <reason>', never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from router import (
    GatePolicy,
    LogisticGate,
    ModelIds,
    Policy,
    PolicyError,
    PrivacyPolicy,
    Rule,
    RuleMatch,
    load_policy,
    parse_policy,
)


def _problems(text: str, source: str = "policies/x.yaml") -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source)
    lines = str(caught.value).splitlines()
    assert len(lines) == len(caught.value.problems)
    return lines


def test_bad_regex_names_the_field() -> None:
    text = """
rules:
  - {name: a, route: local, match: {prompt_tokens_over: 1}}
  - {name: b, route: local, match: {prompt_tokens_over: 2}}
  - {name: c, route: cloud, match: {regex: '('}}
"""
    [problem] = _problems(text)
    assert problem.startswith("policies/x.yaml: rules[2].match.regex: ")
    assert "unterminated subpattern at position 0" in problem


def test_regex_matching_everything_is_refused() -> None:
    [problem] = _problems("rules: [{name: a, route: cloud, match: {regex: 'x*'}}]")
    assert "rules[0].match.regex: matches the empty string" in problem


def test_bad_privacy_pattern_names_the_pattern() -> None:
    [problem] = _problems("privacy: {patterns: {badge: '[a-'}}")
    assert problem.startswith("policies/x.yaml: privacy.patterns.badge: ")
    assert "unterminated character set" in problem


def test_unknown_field_suggests_the_right_one() -> None:
    [problem] = _problems("rules: [{name: a, route: cloud, match: {keyword: [x]}}]")
    assert problem == (
        "policies/x.yaml: rules[0].match.keyword: unknown field (did you mean 'keywords'?)"
    )


def test_unknown_top_level_field() -> None:
    assert _problems("routes: []") == [
        "policies/x.yaml: routes: unknown field (did you mean 'rules'?)"
    ]
    assert _problems("colour: blue") == [
        "policies/x.yaml: colour: unknown field (allowed: version, models, privacy, rules, "
        "default, gate, on_cloud_unavailable, on_budget_exhausted)"
    ]


def test_duplicate_rule_names() -> None:
    text = """
rules:
  - {name: same, route: local, match: {prompt_tokens_over: 1}}
  - {name: other, route: local, match: {prompt_tokens_over: 1}}
  - {name: same, route: cloud, match: {prompt_tokens_over: 2}}
"""
    assert _problems(text) == [
        "policies/x.yaml: rules: duplicate rule name 'same' (rules[0] and rules[2])"
    ]


def test_reserved_rule_names() -> None:
    [problem] = _problems("rules: [{name: default, route: local, match: {max_tokens_over: 1}}]")
    assert problem == "policies/x.yaml: rules: rules[0].name 'default' is reserved for the router"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "rules: [{name: a, route: cloud, match: {prompt_tokens_over: lots}}]",
            "rules[0].match.prompt_tokens_over: Input should be a valid integer (got 'lots')",
        ),
        (
            # YAML reads `yes` as a boolean; strict fields do not turn it into 1.
            "rules: [{name: a, route: cloud, match: {max_tokens_over: yes}}]",
            "rules[0].match.max_tokens_over: Input should be a valid integer (got True)",
        ),
        (
            "rules: [{name: a, route: sideways, match: {max_tokens_over: 1}}]",
            "rules[0].route: Input should be 'local', 'cloud' or 'local_then_check'"
            " (got 'sideways')",
        ),
        (
            "rules: [{name: a, route: cloud, match: {}}]",
            "rules[0].match: needs at least one condition",
        ),
        ("rules: [{route: cloud, match: {max_tokens_over: 1}}]", "rules[0].name: Field required"),
        (
            "rules: [{name: 'two words', route: cloud, match: {max_tokens_over: 1}}]",
            "rules[0].name: a name is 1-64 letters",
        ),
        (
            "rules: [{name: a, route: cloud, match: {keywords: []}}]",
            "rules[0].match.keywords: Tuple should have at least 1 item",
        ),
        (
            "rules: [{name: a, route: cloud, match: {keywords: ['  ']}}]",
            "rules[0].match.keywords[0]: must not be blank",
        ),
        (
            "rules: [{name: a, route: cloud, match: {local_wait_over_seconds: -1}}]",
            "rules[0].match.local_wait_over_seconds: Input should be greater than or equal to 0",
        ),
        ("rules: {name: a}", "rules: Input should be a valid tuple"),
        ("default: remote", "default: Input should be 'local', 'cloud' or 'local_then_check'"),
        ("on_cloud_unavailable: retry", "on_cloud_unavailable: Input should be 'degrade' or"),
        ("version: 2", "version: Input should be 1"),
        ("models: {routed: same, local: same}", "models: routed, local and cloud must be three"),
        ("models: {aliases: {local: cloud}}", "models: aliases: local is already routed"),
        ("models: {aliases: {x: elsewhere}}", "models.aliases.x: Input should be 'routed'"),
        ("models: {routed: 'a b'}", "models.routed: a model id is 1-128 characters"),
        ("privacy: {detectors: [ssn]}", "privacy.detectors[0]: Input should be 'email'"),
        ("privacy: {detectors: [email, email]}", "privacy.detectors: listed more than once: email"),
        ("privacy: {patterns: {email: x}}", "privacy: email: names a built-in detector"),
        (
            "privacy: {patterns: {secret: x}, keywords: {secret: [y]}}",
            "privacy: secret: names a built-in detector or is used twice",
        ),
        (
            "privacy: {keywords: {secret: []}}",
            "privacy.keywords.secret: Tuple should have at least",
        ),
        ("privacy: {scope: everything}", "privacy.scope: Input should be 'last_user' or 'all'"),
    ],
)
def test_schema_errors_name_the_field(text: str, expected: str) -> None:
    problems = _problems(text)
    assert any(problem.startswith(f"policies/x.yaml: {expected}") for problem in problems), problems


def test_every_problem_is_reported() -> None:
    text = "default: remote\ngate: {signal: median}\nextra: 1\n"
    assert [line.split(": ")[1] for line in _problems(text)] == [
        "default",
        "gate.signal",
        "extra",
    ]


def test_yaml_syntax_error_gives_the_line() -> None:
    text = "default: local\nrules:\n  - name: a\n    route: [cloud\n"
    [problem] = _problems(text)
    assert problem.startswith("policies/x.yaml: line 5, column 1: ")


def test_yaml_tab_indentation_gives_the_line() -> None:
    [problem] = _problems("gate:\n\tsignal: min\n")
    assert problem.startswith("policies/x.yaml: line 2, column 1: found character '\\t'")


def test_duplicate_yaml_keys_are_refused() -> None:
    assert _problems("gate: {signal: min}\ndefault: local\ngate: {signal: mean}\n") == [
        "policies/x.yaml: line 3, column 1: duplicate key 'gate'"
    ]


def test_yaml_merge_keys_still_work() -> None:
    # A merged key may be overridden; that is not a duplicate.
    merged = parse_policy(
        "rules:\n  - &r {name: a, route: cloud, match: {max_tokens_over: 5}}\n"
        "  - {<<: *r, name: b}\n"
    )
    assert [rule.name for rule in merged.rules] == ["a", "b"]


def test_empty_and_non_mapping_documents() -> None:
    assert _problems("") == [
        "policies/x.yaml: the policy is empty (write {} to take every default)"
    ]
    assert _problems("- rules") == [
        "policies/x.yaml: expected a mapping of policy sections, found list"
    ]


def test_empty_mapping_takes_every_default() -> None:
    assert parse_policy("{}") == Policy()


def test_load_policy_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("default: cloud\n")
    assert load_policy(path).default == "cloud"
    assert load_policy(str(path)).default == "cloud"


def test_load_policy_names_the_file_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("default: remote\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value).startswith(f"{path}: default: ")


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value) == f"{path}: cannot read: No such file or directory"


def test_directory_and_binary_files(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path)
    binary = tmp_path / "b.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(PolicyError, match="not UTF-8 text"):
        load_policy(binary)


def test_yaml_cannot_build_python_objects() -> None:
    [problem] = _problems("default: !!python/object/apply:os.system ['true']")
    assert "could not determine a constructor" in problem


def test_json_schema() -> None:
    schema = json.loads(json.dumps(Policy.model_json_schema()))
    assert schema["additionalProperties"] is False
    assert "rules" in schema["properties"]
    assert schema["$defs"]["Rule"]["required"] == ["name", "route", "match"]


def test_every_field_has_a_description() -> None:
    models = [Policy, ModelIds, PrivacyPolicy, Rule, RuleMatch, GatePolicy, LogisticGate]
    undescribed = [
        f"{model.__name__}.{name}"
        for model in models
        for name, info in model.model_fields.items()
        if not info.description
    ]
    assert undescribed == []
