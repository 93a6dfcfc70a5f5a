"""Regular expressions as policy fields: compiled once, errors named by field."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Annotated

from pydantic import AfterValidator, StringConstraints
from pydantic_core import PydanticCustomError

from router.schema import StrictStr

# Every pattern in a policy is case-insensitive: operators write "password", not
# "[Pp]assword". A case-sensitive part can still be written (?-i:...), which is
# also much faster to scan when it starts with a literal.
FLAGS = re.IGNORECASE


def compile_pattern(pattern: str) -> re.Pattern[str]:
    return re.compile(pattern, FLAGS)


def _check_regex(pattern: str) -> str:
    try:
        compile_pattern(pattern)
    except re.error as exc:
        # The custom error keeps re's own message ("unterminated subpattern at
        # position 0") without pydantic's "Value error, " prefix.
        raise PydanticCustomError("regex", str(exc)) from exc
    if compile_pattern(pattern).search("") is not None:
        raise PydanticCustomError("regex", "matches the empty string, so it would match every text")
    return pattern


Regex = Annotated[StrictStr, StringConstraints(min_length=1), AfterValidator(_check_regex)]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,63}")


def _check_name(name: str) -> str:
    if not _NAME.fullmatch(name):
        raise PydanticCustomError(
            "name",
            "a name is 1-64 letters, digits and _ . : - (starting with a letter or digit)",
        )
    return name


# Names end up in logs and response headers (x-hybrid-reason), so they are
# restricted to characters that are safe in both.
Name = Annotated[StrictStr, AfterValidator(_check_name)]


def _not_blank(keyword: str) -> str:
    if not keyword.split():
        raise PydanticCustomError("blank", "must not be blank")
    return keyword


Keyword = Annotated[StrictStr, AfterValidator(_not_blank)]


@dataclass(frozen=True)
class KeywordMatcher:
    """Finds any of several keywords as whole words, ignoring case.

    A boundary is required only next to a word character, so "c++" and "```"
    still match; inner whitespace matches any whitespace run, so "step by step"
    matches across a line break. The text is searched lower-cased with a
    case-sensitive pattern, and only when one keyword's longest word occurs in
    it at all: both are several times faster than a case-insensitive scan of a
    long prompt.
    """

    literals: tuple[str, ...]
    pattern: re.Pattern[str]

    @classmethod
    def of(cls, keywords: Sequence[str]) -> KeywordMatcher:
        branches = []
        literals = set()
        for keyword in keywords:
            words = keyword.lower().split()
            literals.add(max(words, key=len))
            body = r"\s+".join(re.escape(word) for word in words)
            head = r"(?<!\w)" if re.match(r"\w", words[0]) else ""
            tail = r"(?!\w)" if re.search(r"\w$", words[-1]) else ""
            branches.append(f"{head}{body}{tail}")
        return cls(tuple(sorted(literals)), re.compile("|".join(branches)))

    def found_in(self, lower_text: str) -> bool:
        if not any(literal in lower_text for literal in self.literals):
            return False
        return self.pattern.search(lower_text) is not None
