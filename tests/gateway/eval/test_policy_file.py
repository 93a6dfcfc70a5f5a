"""Writing the fitted gate into a policy file: loadable, other sections (and comments) kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.eval.policy_file import replace_gate, write_policy
from router import GatePolicy, PolicyError, default_policy, load_policy

ROOT = Path(__file__).resolve().parents[3]
FITTED = GatePolicy.model_validate(
    {
        "signal": "logistic",
        "threshold": 0.35,
        "logistic": {"intercept": 1.5, "weights": {"min": 0.8, "length": -0.01}},
        "holdback_tokens": 16,
    }
)
SOURCE = """\
# My policy: the comments must survive.
version: 1
rules:
  - name: long-prompt   # long prompts go to the cloud
    route: cloud
    match: {prompt_tokens_over: 900}
default: local_then_check

gate:
  signal: min
  threshold: -3.0
  holdback_tokens: 8   # stream sooner

# What happens without a cloud.
on_cloud_unavailable: fail
"""


def _without_gate(path: Path) -> dict[str, object]:
    data = load_policy(path).model_dump()
    data.pop("gate")
    return data


def test_from_the_default_policy(tmp_path: Path) -> None:
    destination = tmp_path / "out" / "policy.yaml"
    policy = write_policy(destination, None, FITTED, "fitted on 50 items\nheld-out APGR 0.7")
    assert policy.gate == FITTED
    assert load_policy(destination) == policy
    expected = default_policy().model_dump()
    expected.pop("gate")
    assert _without_gate(destination) == expected
    text = destination.read_text(encoding="utf-8")
    assert text.startswith("# fitted on 50 items\n# held-out APGR 0.7\n")
    assert "null" not in text  # unset fields are left out when that reads back the same
    assert not (tmp_path / "out" / "policy.yaml.partial").exists()


def test_only_the_gate_block_of_a_source_file_changes(tmp_path: Path) -> None:
    source = tmp_path / "mine.yaml"
    source.write_text(SOURCE, encoding="utf-8")
    destination = tmp_path / "calibrated.yaml"
    write_policy(destination, source, FITTED, "fitted")
    text = destination.read_text(encoding="utf-8")
    before_gate, after_gate = SOURCE.split("gate:\n")[0], "\n# What happens without a cloud.\n"
    assert text.startswith(before_gate)
    assert after_gate + "on_cloud_unavailable: fail\n" in text
    assert "# long prompts go to the cloud" in text
    assert "# stream sooner" not in text  # the old gate block is gone, its comments with it
    assert "# fitted\ngate:\n" in text
    assert load_policy(destination).gate == FITTED
    assert _without_gate(destination) == _without_gate(source)


def test_the_shipped_default_file_keeps_its_comments(tmp_path: Path) -> None:
    source = ROOT / "deploy" / "policies" / "default.yaml"
    destination = tmp_path / "policy.yaml"
    write_policy(destination, source, FITTED, "fitted")
    text = destination.read_text(encoding="utf-8")
    assert "# How a request is decided, before anything is generated:" in text
    assert "Rewritten" not in text
    assert _without_gate(destination) == _without_gate(source)


def test_a_source_without_gate_gets_one_appended(tmp_path: Path) -> None:
    source = tmp_path / "bare.yaml"
    source.write_text("default: local", encoding="utf-8")
    destination = tmp_path / "policy.yaml"
    policy = write_policy(destination, source, FITTED, "fitted")
    assert policy.default == "local"
    assert policy.gate == FITTED
    assert destination.read_text(encoding="utf-8").startswith("default: local\n\n# fitted\ngate:")


def test_a_file_that_cannot_be_edited_by_lines_is_rewritten(tmp_path: Path) -> None:
    # One flow mapping over several lines: swapping the "gate:" line breaks the YAML.
    source = tmp_path / "flow.yaml"
    source.write_text(
        "{version: 1,\ngate: {threshold: -2.0},\non_cloud_unavailable: fail}\n", encoding="utf-8"
    )
    destination = tmp_path / "policy.yaml"
    policy = write_policy(destination, source, FITTED, "fitted")
    assert policy.gate == FITTED
    assert policy.on_cloud_unavailable == "fail"
    assert "could not be kept" in destination.read_text(encoding="utf-8")


def test_an_invalid_source_writes_nothing(tmp_path: Path) -> None:
    source = tmp_path / "bad.yaml"
    source.write_text("gate:\n  signal: loudest\n", encoding="utf-8")
    destination = tmp_path / "policy.yaml"
    with pytest.raises(PolicyError, match="gate.signal"):
        write_policy(destination, source, FITTED, "fitted")
    assert not destination.exists()
    assert list(tmp_path.iterdir()) == [source]


def test_replace_gate_keeps_the_comments_of_the_next_section() -> None:
    text = "gate:\n  threshold: -1.0\n\n# about the fallback\non_cloud_unavailable: fail\n"
    assert replace_gate(text, "gate: {}\n") == (
        "gate: {}\n\n# about the fallback\non_cloud_unavailable: fail\n"
    )
