"""The privacy floor: text that must never leave the machine.

Built-in detectors pair a deliberately loose regex with a check that rejects
look-alikes (Luhn for card numbers, mod-97 for IBANs, digit counts and shapes
for phone numbers), so a random run of digits in a maths question does not pin
a request to the local model.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from router.facts import RequestFacts, Scope
from router.patterns import Keyword, KeywordMatcher, Name, Regex, compile_pattern
from router.schema import Section

DetectorName = Literal["email", "phone", "credit_card", "iban"]


@dataclass(frozen=True)
class Detector:
    name: str
    pattern: re.Pattern[str]
    #: rejects candidates the pattern lets through; None accepts every match
    check: Callable[[str], bool] | None = None
    #: every match contains one of these substrings; looking for them first
    #: (str.__contains__) is far cheaper than running the pattern over a long
    #: prompt, most of which has no digits or no "@"
    needs_one_of: tuple[str, ...] = ()

    def found_in(self, text: str) -> bool:
        if self.needs_one_of and not any(hint in text for hint in self.needs_one_of):
            return False
        if self.check is None:
            return self.pattern.search(text) is not None
        return any(self.check(match.group()) for match in self.pattern.finditer(text))

    def mask(self, text: str) -> str:
        """``text`` with every accepted match replaced by ``[name]``."""
        if self.needs_one_of and not any(hint in text for hint in self.needs_one_of):
            return text

        def replace(match: re.Match[str]) -> str:
            if self.check is not None and not self.check(match.group()):
                return match.group()
            return f"[{self.name}]"

        return self.pattern.sub(replace, text)


def luhn_valid(digits: str) -> bool:
    total = 0
    for position, char in enumerate(reversed(digits)):
        value = ord(char) - 48
        if position % 2 == 1:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


def _prefixes(candidate: str, separators: str, shortest: int, longest: int) -> list[str]:
    """The candidate without separators, then its shorter prefixes cut at
    separators, kept when their length is plausible: a card number or IBAN
    followed by an unrelated number still validates."""
    compact = ""
    cuts = []
    for char in candidate:
        if char in separators:
            cuts.append(len(compact))
        else:
            compact += char
    cuts.append(len(compact))
    return [compact[:cut] for cut in reversed(cuts) if shortest <= cut <= longest]


def _is_card(candidate: str) -> bool:
    return any(luhn_valid(digits) for digits in _prefixes(candidate, " -", 13, 19))


def _iban_valid(compact: str) -> bool:
    rearranged = compact[4:] + compact[:4]
    number = "".join(str(int(char, 36)) for char in rearranged)
    return int(number) % 97 == 1


def _is_iban(candidate: str) -> bool:
    return any(_iban_valid(iban) for iban in _prefixes(candidate.upper(), " ", 15, 34))


_NORTH_AMERICAN = re.compile(r"(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}")


def _is_phone(candidate: str) -> bool:
    digits = sum(char.isdigit() for char in candidate)
    if candidate.startswith("+"):
        return 8 <= digits <= 15  # E.164 allows at most 15 digits
    if _NORTH_AMERICAN.fullmatch(candidate):
        return True
    return 9 <= digits <= 12


# The look-behinds let a candidate start only at the beginning of a word or
# number, which keeps a scan linear even over a long run of digits or letters
# (a base64 blob in a prompt). Where they follow the first character
# (\d(?<![\d-].) = a digit not preceded by a digit or dash), or behind a
# look-ahead for it (the phone pattern), the regex engine skips ahead to that
# character instead of trying every position: 3-4x faster on long prompts.
_EMAIL = re.compile(
    r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}(?![\w-])"
)
_CARD = re.compile(r"\d(?<![\d-].)(?:[ -]?\d){12,22}(?!\d)")
_IBAN = re.compile(r"[A-Z](?<!\w.)[A-Z]\d{2}(?: ?[A-Z0-9]){11,30}(?!\w)")
# Three shapes, so dates (2024-01-15), versions (10.0.19041), IP addresses and
# bare digit runs do not count: international (+ and country code), North
# American (555-123-4567, (555) 123-4567), and national with a trunk 0
# (020 7946 0958, 06 12 34 56 78, 030/1234567).
_PHONE = re.compile(
    r"(?=[+(\d])(?<![\w+./-])"
    r"(?:\+\d{1,3}(?:[ .-]?\(?\d{1,4}\)?){2,5}"
    r"|(?:\(\d{3}\) ?|\d{3}[-. ])\d{3}[-. ]\d{4}"
    r"|\(?0\d{1,4}\)?(?:[ /.-]?\d{2,8}){1,4})"
    r"(?![\w]|[-./]\w)"
)

_DIGITS = tuple("0123456789")

BUILT_IN: dict[str, Detector] = {
    "email": Detector("email", _EMAIL, needs_one_of=("@",)),
    "phone": Detector("phone", _PHONE, _is_phone, _DIGITS),
    "credit_card": Detector("credit_card", _CARD, _is_card, _DIGITS),
    "iban": Detector("iban", _IBAN, _is_iban, _DIGITS),
}


class PrivacyPolicy(Section):
    """Requests whose text any detector finds something in stay local, whatever else applies."""

    detectors: tuple[DetectorName, ...] = Field(
        (),
        description=(
            "Built-in detectors to switch on: email, phone, credit_card (Luhn-checked), "
            "iban (mod-97-checked)."
        ),
    )
    keywords: dict[Name, Annotated[tuple[Keyword, ...], Field(min_length=1)]] = Field(
        default_factory=dict,
        description=(
            "Custom detectors: name -> words or phrases, matched as whole words, ignoring "
            "case (much cheaper than a pattern on long prompts)."
        ),
    )
    patterns: dict[Name, Regex] = Field(
        default_factory=dict,
        description=(
            "Custom detectors: name -> regular expression (Python syntax, case-insensitive). "
            "The name, never the matched text, is reported."
        ),
    )
    scope: Scope = Field(
        "all",
        description=(
            "Which text is scanned: 'all' messages (the whole conversation would be sent "
            "to the cloud) or only the 'last_user' message."
        ),
    )

    @field_validator("detectors")
    @classmethod
    def _unique(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        duplicates = sorted({name for name in value if value.count(name) > 1})
        if duplicates:
            raise ValueError(f"listed more than once: {', '.join(duplicates)}")
        return value

    @model_validator(mode="after")
    def _names_unique(self) -> PrivacyPolicy:
        # The name is all a decision reports, so it must say which detector it was.
        clashes = sorted(
            (set(self.keywords) & set(self.patterns))
            | ((set(self.keywords) | set(self.patterns)) & set(BUILT_IN))
        )
        if clashes:
            raise ValueError(
                f"{', '.join(clashes)}: names a built-in detector or is used twice among "
                "keywords and patterns"
            )
        return self

    # cached_property, not pydantic private attributes: see RuleMatch.
    @cached_property
    def _detectors(self) -> tuple[Detector, ...]:
        built_in = [BUILT_IN[name] for name in self.detectors]
        custom = [Detector(name, compile_pattern(regex)) for name, regex in self.patterns.items()]
        return tuple(built_in + custom)

    @cached_property
    def _keyword_lists(self) -> tuple[tuple[str, KeywordMatcher], ...]:
        return tuple((name, KeywordMatcher.of(words)) for name, words in self.keywords.items())

    def model_post_init(self, context: object, /) -> None:
        # Compile at load time, not on the first request.
        self._detectors, self._keyword_lists  # noqa: B018

    def mask(self, text: str) -> str:
        """``text`` with everything a detector or keyword list finds replaced by ``[name]``.

        For storing content (an opt-in of the ledger), not for deciding: it
        applies every detector, whatever the scope.
        """
        for detector in self._detectors:
            text = detector.mask(text)
        for name, matcher in self._keyword_lists:
            # the matcher searches lower-cased text; masking must keep the original case
            text = re.sub(matcher.pattern.pattern, f"[{name}]", text, flags=re.IGNORECASE)
        return text

    def first_match(self, facts: RequestFacts) -> str | None:
        """The name of the first detector that finds something, or None: built-in
        detectors in the order listed, then keyword lists, then patterns."""
        detectors = self._detectors
        builtin_count = len(self.detectors)
        if builtin_count:
            text = facts.text(self.scope)
            for detector in detectors[:builtin_count]:
                if detector.found_in(text):
                    return detector.name
        if self._keyword_lists:
            lower = facts.lower_text(self.scope)
            for name, matcher in self._keyword_lists:
                if matcher.found_in(lower):
                    return name
        if len(detectors) > builtin_count:
            text = facts.text(self.scope)
            for detector in detectors[builtin_count:]:
                if detector.found_in(text):
                    return detector.name
        return None
