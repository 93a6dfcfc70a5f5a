"""The router's one exception: a policy file that cannot be used.

Loading a policy either returns a valid :class:`~router.policy.Policy` or raises
:class:`PolicyError` listing every problem found (not just the first), each as
``<file>: <where>: <reason>`` where ``<where>`` is a field path such as
``rules[2].match.regex`` or, for YAML syntax, ``line 3, column 7``; problems
with the whole file (missing, empty) have no ``<where>``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class PolicyProblem:
    source: str
    #: a field path, "line L, column C" for YAML syntax, or None for the whole file
    where: str | None
    reason: str

    def __str__(self) -> str:
        if self.where is None:
            return f"{self.source}: {self.reason}"
        return f"{self.source}: {self.where}: {self.reason}"


class PolicyError(Exception):
    """A policy file is missing, is not valid YAML, or does not fit the schema."""

    def __init__(self, problems: Iterable[PolicyProblem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(problem) for problem in self.problems))
