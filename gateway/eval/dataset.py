"""The generic evaluation dataset: JSON Lines, one item per line.

Each line is an object with:

- ``messages`` (an OpenAI chat list of ``{"role", "content"}`` with string
  content) or ``prompt`` (a string): exactly one of the two;
- ``answers``: a non-empty list of non-empty strings, the accepted answers;
- ``match``: how an answer is checked, one of ``contains`` (the default),
  ``exact``, ``number``, ``choice``, ``yesno`` (see :mod:`gateway.eval.answers`);
- ``id`` (optional string): defaults to ``line-<n>``; ids must be unique.

Blank lines are skipped. Unknown fields are errors, so a typo such as
``answer`` fails loudly instead of being ignored. Gold answers are checked
against their mode at load time (a ``number`` answer must be one number, a
``choice`` answer a letter A-E, a ``yesno`` answer yes or no), so a bad
dataset fails before any model runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from gateway.eval.answers import MATCH_MODES, Match, validate_gold

_FIELDS = frozenset({"id", "messages", "prompt", "answers", "match"})
_ROLES = frozenset({"system", "developer", "user", "assistant", "tool"})


class DatasetError(ValueError):
    """A dataset file that cannot be used: names the file, the line and the field."""

    def __init__(self, path: Path, line: int | None, field: str | None, reason: str) -> None:
        self.path = path
        self.line = line
        self.field = field
        self.reason = reason
        where = str(path) if line is None else f"{path}:{line}"
        super().__init__(f"{where}: {reason}" if field is None else f"{where}: {field}: {reason}")


@dataclass(frozen=True)
class ChatTurn:
    role: str
    content: str


@dataclass(frozen=True)
class EvalItem:
    id: str
    answers: tuple[str, ...]
    match: Match
    #: exactly one of prompt and messages is set
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] | None = None

    def chat_messages(self) -> list[dict[str, str]]:
        """The item as an OpenAI chat list; a bare prompt is one user turn."""
        if self.messages is None:
            return [{"role": "user", "content": self.prompt or ""}]
        return [{"role": turn.role, "content": turn.content} for turn in self.messages]


class _Fail:
    """Builds errors for one line, so each check states only field and reason."""

    def __init__(self, path: Path, line: int) -> None:
        self.path = path
        self.line = line

    def __call__(self, field: str | None, reason: str) -> DatasetError:
        return DatasetError(self.path, self.line, field, reason)


def _messages(value: object, fail: _Fail) -> tuple[ChatTurn, ...]:
    if not isinstance(value, list) or not value:
        raise fail("messages", "must be a non-empty list of {role, content} objects")
    turns = []
    for index, message in enumerate(value):
        field = f"messages[{index}]"
        if not isinstance(message, dict):
            raise fail(field, "must be an object with role and content")
        message = cast(dict[str, Any], message)
        extra = sorted(set(message) - {"role", "content", "name"})
        if extra:
            raise fail(field, f"unknown fields {extra}")
        role, content = message.get("role"), message.get("content")
        if role not in _ROLES:
            raise fail(f"{field}.role", f"must be one of {sorted(_ROLES)}, got {role!r}")
        if not isinstance(content, str):
            raise fail(f"{field}.content", "must be a string")
        turns.append(ChatTurn(role=cast(str, role), content=content))
    return tuple(turns)


def _item(raw: object, fail: _Fail) -> EvalItem:
    if not isinstance(raw, dict):
        raise fail(None, "each line must be a JSON object")
    data = cast(dict[str, Any], raw)
    unknown = sorted(set(data) - _FIELDS)
    if unknown:
        raise fail(unknown[0], f"unknown field (expected some of {sorted(_FIELDS)})")

    has_messages, has_prompt = "messages" in data, "prompt" in data
    if has_messages == has_prompt:
        which = "both" if has_messages else "neither"
        raise fail("messages/prompt", f"exactly one of messages and prompt is needed, got {which}")
    prompt: str | None = None
    messages: tuple[ChatTurn, ...] | None = None
    if has_prompt:
        if not isinstance(data["prompt"], str) or not data["prompt"].strip():
            raise fail("prompt", "must be a non-empty string")
        prompt = data["prompt"]
    else:
        messages = _messages(data["messages"], fail)

    match = data.get("match", "contains")
    if match not in MATCH_MODES:
        raise fail("match", f"must be one of {list(MATCH_MODES)}, got {match!r}")

    if "answers" not in data:
        raise fail("answers", "missing (a non-empty list of accepted answers)")
    answers = data["answers"]
    if not isinstance(answers, list) or not answers:
        raise fail("answers", "must be a non-empty list of strings")
    for index, answer in enumerate(answers):
        if not isinstance(answer, str):
            raise fail(f"answers[{index}]", "must be a string")
        try:
            validate_gold(answer, cast(Match, match))
        except ValueError as exc:
            raise fail(f"answers[{index}]", f"{exc} (match is {match})") from exc

    item_id = data.get("id", f"line-{fail.line}")
    if not isinstance(item_id, str) or not item_id:
        raise fail("id", "must be a non-empty string")
    return EvalItem(
        id=item_id,
        answers=tuple(cast(list[str], answers)),
        match=cast(Match, match),
        prompt=prompt,
        messages=messages,
    )


def load_jsonl(path: str | Path) -> list[EvalItem]:
    """Read and check a dataset; raises :class:`DatasetError` on the first bad
    line (and OSError when the file cannot be read)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DatasetError(path, None, None, f"not UTF-8 text ({exc.reason})") from exc
    items: list[EvalItem] = []
    first_line: dict[str, int] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fail = _Fail(path, number)
        try:
            raw = json.loads(line)
        except json.JSONDecodeError as exc:
            raise fail(None, f"invalid JSON: {exc.msg} (column {exc.colno})") from exc
        item = _item(raw, fail)
        if item.id in first_line:
            raise fail("id", f"duplicate id {item.id!r} (first on line {first_line[item.id]})")
        first_line[item.id] = number
        items.append(item)
    if not items:
        raise DatasetError(path, None, None, "no items")
    return items
