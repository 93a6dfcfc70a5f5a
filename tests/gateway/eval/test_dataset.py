"""The JSONL dataset: a good file, and every kind of bad line named precisely."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from gateway.eval.dataset import ChatTurn, DatasetError, EvalItem, load_jsonl


def _write(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "eval.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


GOOD = {"prompt": "Capital of France?", "answers": ["Paris"]}


def test_good_file(tmp_path: Path) -> None:
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]
    path = _write(
        tmp_path,
        json.dumps(GOOD),
        "",
        json.dumps({"id": "sum", "messages": chat, "answers": ["4"], "match": "number"}),
        json.dumps({"prompt": "Pick one", "answers": ["b"], "match": "choice"}),
    )
    items = load_jsonl(path)
    assert items == [
        EvalItem(id="line-1", answers=("Paris",), match="contains", prompt="Capital of France?"),
        EvalItem(
            id="sum",
            answers=("4",),
            match="number",
            messages=(ChatTurn("system", "Be brief."), ChatTurn("user", "2+2?")),
        ),
        EvalItem(id="line-4", answers=("b",), match="choice", prompt="Pick one"),
    ]
    assert items[0].chat_messages() == [{"role": "user", "content": "Capital of France?"}]
    assert items[1].chat_messages() == chat


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        ('{"prompt": "x", "answers": ["a"', None, "invalid JSON"),
        ('["not", "an", "object"]', None, "JSON object"),
        ('{"prompt": "x"}', "answers", "missing"),
        ('{"prompt": "x", "answers": []}', "answers", "non-empty list"),
        ('{"prompt": "x", "answers": "Paris"}', "answers", "non-empty list"),
        ('{"prompt": "x", "answers": [1]}', "answers[0]", "must be a string"),
        ('{"prompt": "x", "answers": ["a"], "match": "fuzzy"}', "match", "must be one of"),
        ('{"prompt": "x", "answers": ["many"], "match": "number"}', "answers[0]", "single number"),
        ('{"prompt": "x", "answers": ["Z"], "match": "choice"}', "answers[0]", "choice letter"),
        ('{"prompt": "x", "answers": ["..."]}', "answers[0]", "empty once normalised"),
        ('{"answers": ["a"]}', "messages/prompt", "got neither"),
        (
            '{"prompt": "x", "messages": [{"role": "user", "content": "x"}], "answers": ["a"]}',
            "messages/prompt",
            "got both",
        ),
        ('{"prompt": "", "answers": ["a"]}', "prompt", "non-empty string"),
        ('{"messages": [], "answers": ["a"]}', "messages", "non-empty list"),
        (
            '{"messages": [{"role": "boss", "content": "x"}], "answers": ["a"]}',
            "messages[0].role",
            "",
        ),
        (
            '{"messages": [{"role": "user", "content": 3}], "answers": ["a"]}',
            "messages[0].content",
            "",
        ),
        ('{"prompt": "x", "answer": ["a"]}', "answer", "unknown field"),
        ('{"prompt": "x", "answers": ["ok"], "id": 7}', "id", "non-empty string"),
    ],
)
def test_bad_line(tmp_path: Path, line: str, field: str | None, reason: str) -> None:
    path = _write(tmp_path, json.dumps(GOOD), line)
    with pytest.raises(DatasetError) as caught:
        load_jsonl(path)
    error = caught.value
    assert isinstance(error, ValueError)
    assert (error.path, error.line, error.field) == (path, 2, field)
    assert reason in error.reason
    assert str(error).startswith(f"{path}:2: ")
    if field is not None:
        assert f": {field}: " in str(error)


def test_duplicate_id(tmp_path: Path) -> None:
    item = json.dumps({**GOOD, "id": "q1"})
    with pytest.raises(DatasetError, match=r":3: id: duplicate id 'q1' \(first on line 1\)"):
        load_jsonl(_write(tmp_path, item, json.dumps(GOOD), item))


def test_empty_file(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="no items"):
        load_jsonl(_write(tmp_path, "", "  "))


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "latin1.jsonl"
    path.write_bytes('{"prompt": "café"}\n'.encode("latin-1"))
    with pytest.raises(DatasetError, match="not UTF-8") as caught:
        load_jsonl(path)
    assert caught.value.line is None
