"""``hybrid-gateway policy check|schema`` in a subprocess, as an operator runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "policy", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_check_accepts_a_good_policy() -> None:
    result = _run("check", "deploy/policies/default.yaml")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok: deploy/policies/default.yaml (6 rules)\n"
    assert result.stderr == ""


def test_check_reports_every_problem(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("default: remote\nrules: [{name: a, route: cloud, match: {regex: '('}}]\n")
    result = _run("check", str(path))
    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert lines[0].startswith(f"{path}: rules[0].match.regex: ")
    assert lines[1].startswith(f"{path}: default: ")
    assert len(lines) == 2
    assert "Traceback" not in result.stderr


def test_check_missing_file(tmp_path: Path) -> None:
    result = _run("check", str(tmp_path / "absent.yaml"))
    assert result.returncode == 1
    assert result.stderr == f"{tmp_path / 'absent.yaml'}: cannot read: No such file or directory\n"


def test_check_yaml_syntax_error(tmp_path: Path) -> None:
    path = tmp_path / "broken.yaml"
    path.write_text("rules:\n  - name: [a\n")
    result = _run("check", str(path))
    assert result.returncode == 1
    assert result.stderr.startswith(f"{path}: line 3, column 1: ")
    assert "Traceback" not in result.stderr


def test_schema_prints_json() -> None:
    result = _run("schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "rules" in schema["properties"]
    assert schema["title"] == "Policy"
