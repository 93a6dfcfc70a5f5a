"""Writing a fitted gate into a policy file the router loads.

The new file is the source policy with its ``gate:`` section replaced. When
the source is a file, only the lines of its top-level ``gate:`` block are
replaced (or a block is appended), so every other section keeps its text and
comments; if that edit does not read back as exactly the source policy with
the new gate, the whole policy is written out by the YAML dumper instead
(comments lost, content identical). Without a source, the built-in default
policy is written out.

Whatever is written is read back with :func:`router.loading.load_policy`
before it replaces the destination, so an invalid policy never lands there.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import yaml

from router import (
    GatePolicy,
    Policy,
    PolicyError,
    PolicyProblem,
    default_policy,
    load_policy,
    parse_policy,
)

_TOP_LEVEL = re.compile(r"^[^\s#]")
_GATE = re.compile(r"^gate\s*:")


def gate_block(gate: GatePolicy, comment: str) -> str:
    """A top-level ``gate:`` section in YAML, preceded by ``# comment`` lines."""
    body = yaml.safe_dump(
        {"gate": gate.model_dump(mode="json", exclude_none=True)}, sort_keys=False
    )
    notes = "".join(f"# {line}\n" for line in comment.splitlines())
    return notes + body


def replace_gate(text: str, block: str) -> str:
    """``text`` with its top-level gate block swapped for ``block`` (appended if absent).

    The old block runs from its ``gate:`` line to the next top-level line;
    comments and blank lines just before that next line belong to it, so they stay.
    """
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if _GATE.match(line)), None)
    if start is None:
        separator = "" if not text or text.endswith("\n") else "\n"
        return text + separator + "\n" + block
    end = start + 1
    while end < len(lines) and not _TOP_LEVEL.match(lines[end]):
        end += 1
    while end - 1 > start and (
        not lines[end - 1].strip() or lines[end - 1].lstrip().startswith("#")
    ):
        end -= 1
    return "".join(lines[:start]) + block + "".join(lines[end:])


def _without_gate(policy: Policy) -> dict[str, Any]:
    data = policy.model_dump(mode="json")
    data.pop("gate")
    return data


def _whole(base: Policy, gate: GatePolicy, intro: str) -> str:
    """All of ``base`` with ``gate``, written out by the YAML dumper. Unset (null)
    fields are left out when the text still reads back as the same policy."""
    text = ""
    for exclude_none in (True, False):
        data = base.model_dump(mode="json", exclude_none=exclude_none)
        data["gate"] = gate.model_dump(mode="json", exclude_none=exclude_none)
        text = intro + yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
        try:
            again = parse_policy(text)
        except PolicyError:
            continue
        if again.gate == gate and _without_gate(again) == _without_gate(base):
            break
    return text


def render(source: Path | None, gate: GatePolicy, comment: str) -> str:
    """The text of the new policy file. Raises PolicyError for an invalid source."""
    intro = "".join(f"# {line}\n" for line in comment.splitlines())
    if source is None:
        return _whole(
            default_policy(), gate, intro + "# Starting point: the built-in default policy.\n"
        )
    original = load_policy(source)
    text = source.read_text(encoding="utf-8")
    edited = replace_gate(text, gate_block(gate, comment))
    try:
        again = parse_policy(edited, str(source))
    except PolicyError:
        again = None
    if again is not None and again.gate == gate and _without_gate(again) == _without_gate(original):
        return edited
    note = f"# Rewritten from {source.name} (its comments could not be kept).\n"
    return _whole(original, gate, intro + note)


def write_policy(destination: Path, source: Path | None, gate: GatePolicy, comment: str) -> Policy:
    """Write the policy with ``gate`` to ``destination``, validated first; returns it as loaded."""
    text = render(source, gate, comment)
    destination.parent.mkdir(parents=True, exist_ok=True)
    partial = destination.with_name(destination.name + ".partial")
    partial.write_text(text, encoding="utf-8")
    try:
        policy = load_policy(partial)
        if policy.gate != gate:
            problem = PolicyProblem(str(partial), "gate", "does not read back as the fitted gate")
            raise PolicyError([problem])
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, destination)
    return policy
