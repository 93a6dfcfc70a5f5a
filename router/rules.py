"""Pre-generation rules: conditions on what is known before generation starts."""

from __future__ import annotations

import re
from functools import cached_property

from pydantic import Field, model_validator

from router.decision import Decision, Route
from router.facts import RequestFacts, Scope
from router.patterns import Keyword, KeywordMatcher, Name, Regex, compile_pattern
from router.schema import Section, StrictFloat, StrictInt


class RuleMatch(Section):
    """Conditions of one rule. Every condition given must hold (they are ANDed);
    at least one is required."""

    prompt_tokens_over: StrictInt | None = Field(
        None, ge=0, description="The prompt is longer than this many tokens (local tokenizer)."
    )
    max_tokens_over: StrictInt | None = Field(
        None,
        ge=0,
        description=(
            "The client asked for more than this many completion tokens "
            "(a request without max_tokens never matches)."
        ),
    )
    local_wait_over_seconds: StrictFloat | None = Field(
        None,
        ge=0,
        description=(
            "The estimated wait before the local model could start this request exceeds "
            "this many seconds (the load rule)."
        ),
    )
    regex: Regex | None = Field(
        None,
        description="A regular expression (Python syntax, case-insensitive) found in the text.",
    )
    keywords: tuple[Keyword, ...] | None = Field(
        None,
        min_length=1,
        description=(
            "Any of these words or phrases occurs in the text as a whole word "
            "(case-insensitive; whitespace inside a phrase matches any whitespace)."
        ),
    )
    scope: Scope = Field(
        "last_user",
        description="Text searched by regex and keywords: the 'last_user' message or 'all'.",
    )

    @model_validator(mode="after")
    def _some_condition(self) -> RuleMatch:
        conditions = (
            self.prompt_tokens_over,
            self.max_tokens_over,
            self.local_wait_over_seconds,
            self.regex,
            self.keywords,
        )
        if all(condition is None for condition in conditions):
            raise ValueError(
                "needs at least one condition: prompt_tokens_over, max_tokens_over, "
                "local_wait_over_seconds, regex or keywords"
            )
        return self

    # Compiled once per policy. cached_property rather than a pydantic private
    # attribute: reading one of those goes through __getattr__ and costs more
    # than the regex search of a short prompt.
    @cached_property
    def _regex(self) -> re.Pattern[str] | None:
        return None if self.regex is None else compile_pattern(self.regex)

    @cached_property
    def _keywords(self) -> KeywordMatcher | None:
        return None if self.keywords is None else KeywordMatcher.of(self.keywords)

    def model_post_init(self, context: object, /) -> None:
        # Compile at load time, not on the first request.
        self._regex, self._keywords  # noqa: B018

    def matches(self, facts: RequestFacts) -> bool:
        # Cheap numeric conditions first: a rule that fails on them never scans text.
        if self.prompt_tokens_over is not None and not facts.prompt.over(self.prompt_tokens_over):
            return False
        if self.max_tokens_over is not None and (
            facts.max_tokens is None or facts.max_tokens <= self.max_tokens_over
        ):
            return False
        if (
            self.local_wait_over_seconds is not None
            and facts.local_wait_seconds <= self.local_wait_over_seconds
        ):
            return False
        if self._regex is not None and self._regex.search(facts.text(self.scope)) is None:
            return False
        return self._keywords is None or self._keywords.found_in(facts.lower_text(self.scope))


class Rule(Section):
    """When match holds, the request takes route, and the decision's reason is name."""

    name: Name = Field(
        description="Unique name; it becomes the decision's reason (logs, x-hybrid-reason)."
    )
    route: Route = Field(description="Where a matching request goes.")
    match: RuleMatch = Field(description="The conditions, ANDed.")

    @cached_property
    def _decision(self) -> Decision:
        return Decision(self.route, self.name)

    def model_post_init(self, context: object, /) -> None:
        self._decision  # noqa: B018

    def decide(self, facts: RequestFacts) -> Decision | None:
        return self._decision if self.match.matches(facts) else None
