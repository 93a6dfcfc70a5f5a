"""The README's "Routing policies" section documents every policy field."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from router import Policy

README = Path(__file__).resolve().parents[2] / "README.md"


def _section() -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index("## Routing policies")
    return text[start : text.index("\n## ", start + 1)]


def _model_in(annotation: Any) -> tuple[type[BaseModel] | None, bool]:
    """The model a field holds and whether it is a list of them."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation, False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            model, _ = _model_in(arg)
            if model is not None:
                return model, typing.get_origin(annotation) is tuple
    return None, False


def _paths(model: type[BaseModel], prefix: str = "") -> list[str]:
    paths = []
    for name, info in model.model_fields.items():
        nested, is_list = _model_in(info.annotation)
        if nested is None:
            paths.append(prefix + name)
        else:
            paths.extend(_paths(nested, f"{prefix}{name}{'[]' if is_list else ''}."))
    return paths


def test_every_field_is_documented() -> None:
    section = _section()
    paths = _paths(Policy)
    assert "rules[].match.regex" in paths
    assert "gate.logistic.weights" in paths
    assert [path for path in paths if f"| `{path}` |" not in section] == []


def test_cli_commands_are_documented() -> None:
    section = _section()
    assert "hybrid-gateway policy check" in section
    assert "hybrid-gateway policy schema" in section


def _documented_default(model: type[BaseModel], name: str) -> str:
    info = model.model_fields[name]
    if info.is_required():
        return "required"
    value = info.get_default(call_default_factory=True)
    if value is None:
        return "null" if model.__name__ == "GatePolicy" else "—"
    if value == ():
        return "[]"
    return "{}" if value == {} else str(value)


def test_documented_defaults_are_current() -> None:
    section = _section()
    rows = {
        line.split("|")[1].strip().strip("`"): line.split("|")[2].strip().strip("`")
        for line in section.splitlines()
        if line.startswith("| `")
    }

    def check(model: type[BaseModel], prefix: str) -> list[str]:
        wrong = []
        for name, info in model.model_fields.items():
            nested, is_list = _model_in(info.annotation)
            path = prefix + name
            if nested is not None:
                wrong.extend(check(nested, f"{path}{'[]' if is_list else ''}."))
            elif path in rows and rows[path] != _documented_default(model, name):
                wrong.append(
                    f"{path}: README {rows[path]!r}, code {_documented_default(model, name)!r}"
                )
        return wrong

    assert check(Policy, "") == []
