"""Reading a policy file: YAML, then the schema, with every problem reported.

This is the router's only I/O: a policy is read once, at start-up or by
``hybrid-gateway policy check``.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Iterator
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from router.errors import PolicyError, PolicyProblem
from router.policy import Policy


class _UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; two `gate:` sections are a mistake."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict[Any, Any]:
    seen: set[object] = set()
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r}", key_node.start_mark
            )
        seen.add(key)
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
    _construct_mapping,
)


def load_policy(path: str | os.PathLike[str]) -> Policy:
    """Read and validate a policy file; raise :class:`PolicyError` on any problem."""
    source = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except OSError as exc:
        reason = exc.strerror or str(exc)
        raise PolicyError([PolicyProblem(source, None, f"cannot read: {reason}")]) from exc
    except UnicodeDecodeError as exc:
        raise PolicyError([PolicyProblem(source, None, f"not UTF-8 text: {exc}")]) from exc
    return parse_policy(text, source)


def parse_policy(text: str, source: str = "<policy>") -> Policy:
    """Validate a policy given as YAML text; ``source`` names it in errors."""
    try:
        # A SafeLoader subclass: a policy file cannot construct Python objects.
        data = yaml.load(text, Loader=_UniqueKeyLoader)
    except yaml.MarkedYAMLError as exc:
        raise PolicyError([_yaml_problem(source, exc)]) from exc
    except yaml.YAMLError as exc:
        raise PolicyError([PolicyProblem(source, None, f"invalid YAML: {exc}")]) from exc
    if data is None:
        raise PolicyError(
            [PolicyProblem(source, None, "the policy is empty (write {} to take every default)")]
        )
    if not isinstance(data, dict):
        found = type(data).__name__
        raise PolicyError(
            [PolicyProblem(source, None, f"expected a mapping of policy sections, found {found}")]
        )
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(_schema_problems(source, exc)) from exc


def _yaml_problem(source: str, exc: yaml.MarkedYAMLError) -> PolicyProblem:
    mark = exc.problem_mark or exc.context_mark
    where = None if mark is None else f"line {mark.line + 1}, column {mark.column + 1}"
    reason = exc.problem or "invalid YAML"
    if exc.context:
        reason = f"{reason} ({exc.context})"
    return PolicyProblem(source, where, reason)


def _schema_problems(source: str, exc: ValidationError) -> list[PolicyProblem]:
    return [
        PolicyProblem(source, field_path(error["loc"]), _reason(error))
        for error in exc.errors(include_url=False)
    ]


def field_path(loc: tuple[int | str, ...]) -> str:
    """``("rules", 2, "match", "regex")`` -> ``rules[2].match.regex``."""
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part != "[key]":
            path += f".{part}" if path else part
    return path or "(top level)"


def _reason(error: ErrorDetails) -> str:
    loc = error["loc"]
    if error["type"] == "extra_forbidden":
        allowed = _fields_at(loc[:-1])
        hint = difflib.get_close_matches(str(loc[-1]), allowed, n=1)
        if hint:
            return f"unknown field (did you mean {hint[0]!r}?)"
        return f"unknown field (allowed: {', '.join(allowed)})" if allowed else "unknown field"
    message = error["msg"].removeprefix("Value error, ")
    if loc and loc[-1] == "[key]":
        return f"key {error['input']!r}: {message}"
    value = error.get("input")
    if error["type"] not in ("missing", "value_error") and isinstance(
        value, str | int | float | bool
    ):
        return f"{message} (got {value!r})"
    return message


def _fields_at(loc: tuple[int | str, ...]) -> list[str]:
    """Field names of the section at ``loc``, for 'did you mean' hints."""
    model: type[BaseModel] | None = Policy
    for part in loc:
        if model is None:
            return []
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        model = None if field is None else _model_in(field.annotation)
    return [] if model is None else list(model.model_fields)


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds, looking inside ``X | None`` and ``tuple[X, ...]``."""
    for candidate in _walk(annotation):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _walk(annotation: Any) -> Iterator[Any]:
    yield annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            yield from _walk(arg)
