"""Answer checking for evaluation runs: is a model's free-text answer right?

Five modes, each deliberately simple so that a score can be explained:

- ``contains``: some gold answer appears in the answer as whole words, after
  :func:`normalize` on both sides. Lenient: "Paris, of course" is right for
  "Paris", but so is "not Paris" (no checker of this kind understands negation).
- ``exact``: the normalised answer equals some normalised gold answer.
- ``number``: the LAST number in the answer equals some gold number (models
  reason first and conclude last): exactly when both are whole numbers, else
  within 1e-6 relative. See :func:`last_number` for what counts as a number.
- ``choice``: the option letter A-E the answer picks equals the gold letter.
  See :func:`chosen_letter` for how the letter is found.
- ``yesno``: the first "yes" or "no" in the answer equals the gold "yes"/"no"
  ("true"/"false" count as yes/no). See :func:`yes_or_no`.

An empty or blank answer is never right. A gold answer that cannot be read in
its mode (no number, not a letter, not yes/no) is a dataset bug and raises ValueError;
``gateway.eval.dataset`` checks this at load time.
"""

from __future__ import annotations

import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Literal, get_args

Match = Literal["contains", "exact", "number", "choice", "yesno"]
MATCH_MODES: tuple[str, ...] = get_args(Match)

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD-style normalisation: lowercase, drop punctuation, drop the articles
    a/an/the, collapse whitespace.

    As in the SQuAD evaluation script punctuation is deleted, not replaced by a
    space ("1,234" -> "1234", "don't" -> "dont"), so scores stay comparable with
    published exact-match numbers. Unlike it, Unicode punctuation (curly quotes,
    dashes, guillemets) is deleted too, not just ASCII.
    """
    lowered = text.lower()
    kept = "".join(ch for ch in lowered if not unicodedata.category(ch).startswith("P"))
    return " ".join(_ARTICLES.sub(" ", kept).split())


# Not glued to a word, a decimal point or a slash on the left: "x2" and "v1.2"
# hold no number, a date "1/2/2020" reads as 1 only, and "5-3" ends with 3, not -3.
_NUMBER = re.compile(
    r"""
    (?<![\w./])
    (?P<sign>[-\N{MINUS SIGN}])?
    (?:
        (?P<numerator>\d+)/(?P<denominator>\d+)(?![\d/])
      | (?P<grouped>\d{1,3}(?:,\d{3})+(?:\.\d+)?)(?!\d|,\d)
      | (?P<plain>\d+(?:\.\d+)?|\.\d+)
    )
    """,
    re.VERBOSE,
)


def numbers(text: str) -> list[float]:
    """Every number in ``text``, in order (see :func:`last_number`)."""
    found: list[float] = []
    for match in _NUMBER.finditer(text):
        sign = -1.0 if match["sign"] else 1.0
        if match["numerator"] is not None:
            denominator = int(match["denominator"])
            if denominator == 0:
                continue
            found.append(sign * int(match["numerator"]) / denominator)
        elif match["grouped"] is not None:
            found.append(sign * float(match["grouped"].replace(",", "")))
        else:
            found.append(sign * float(match["plain"]))
    return found


def last_number(text: str) -> float | None:
    """The last number in ``text``, or None.

    Read: integers, decimals (".5" too), a leading minus ("-" or U+2212),
    thousands separators in groups of three ("1,234.5"; "1,2345" is read as
    1 and 2345), and simple fractions "3/4" (a zero denominator is skipped).
    Not read: exponents ("1e3" is 1 then 3), spelled-out numbers, LaTeX
    (\\frac{3}{4} is 3 then 4). Units and signs around it are ignored: "$1,234"
    and "50%" read as 1234 and 50.
    """
    found = numbers(text)
    return found[-1] if found else None


_LETTER = "A-E"
# Rules in priority order; the first rule that matches decides, and within a
# rule the first match counts. A lowercase letter only counts where it cannot
# be the article "a" or a word: alone, or in brackets.
_CHOICE_RULES = (
    # the whole answer is the letter: "B", "(b)", "b.", "[C]"
    re.compile(rf"^\s*[(\[]?([{_LETTER}])[)\]]?[.:]?\s*$", re.IGNORECASE),
    # an explicit statement: "the answer is C", "Answer: (b)", "correct option is D"
    re.compile(
        rf"(?i:answer|option|choice)\s*(?:is|:)\s*:?\s*(?:[(\[]([{_LETTER}a-e])[)\]]|([{_LETTER}])\b)"
    ),
    # a bracketed letter anywhere: "I'd say (B), since ..."
    re.compile(rf"[(\[]([{_LETTER}a-e])[)\]]"),
    # an option label at the start: "C) Paris", "C. Paris", "C: Paris"
    re.compile(rf"^\s*([{_LETTER}])[).:](?:\s|$)"),
    # any standalone capital letter, except "A" used as an article ("A cat is B")
    re.compile(rf"\b(?!A\s+[a-z])([{_LETTER}])\b"),
)


def chosen_letter(text: str) -> str | None:
    """The option letter (uppercase A-E) the answer picks, or None.

    Tried in order, first success wins: the whole answer is a letter (any case,
    optionally bracketed); "answer/option/choice is X" or "answer: X" (a
    lowercase letter only in brackets); a bracketed letter anywhere; a leading
    label "X)"/"X."/"X:"; finally the first standalone capital A-E that is not
    the article "A" before a lowercase word. So "I think the answer is (B)
    because A is wrong" picks B, and "A" alone picks A.
    """
    for rule in _CHOICE_RULES:
        found = rule.search(text)
        if found:
            letter = next(group for group in found.groups() if group)
            return letter.upper()
    return None


_YES_NO = {"yes": "yes", "true": "yes", "no": "no", "false": "no"}


def yes_or_no(text: str) -> str | None:
    """The verdict the answer gives: the first of the words yes, no, true,
    false in the normalised answer, as "yes" or "no"; None when there is none.

    The first one decides, because a model states its verdict first and then
    explains ("No, because yes-men ..." is no). "Not" and "nope" are not read:
    an answer that never says yes or no is wrong, whatever it implies.
    """
    for word in normalize(text).split():
        verdict = _YES_NO.get(word)
        if verdict is not None:
            return verdict
    return None


def _gold_yes_no(gold: str) -> str:
    verdict = gold.strip().lower()
    if verdict not in ("yes", "no"):
        raise ValueError(f"gold answer {gold!r} is not yes or no")
    return verdict


def _gold_number(gold: str) -> float:
    value = last_number(gold)
    if value is None or len(numbers(gold)) != 1:
        raise ValueError(f"gold answer {gold!r} is not a single number")
    return value


def _gold_letter(gold: str) -> str:
    letter = gold.strip().upper()
    if len(letter) != 1 or letter not in "ABCDE":
        raise ValueError(f"gold answer {gold!r} is not a choice letter A-E")
    return letter


def _same_number(value: float, gold: float) -> bool:
    # Whole numbers compare exactly: at 1e-6 relative, 1000001 would "equal" 1000000.
    # The tolerance is for decimals that went through floating point arithmetic.
    if value.is_integer() and gold.is_integer():
        return value == gold
    return math.isclose(value, gold, rel_tol=1e-6)


def validate_gold(gold: str, match: Match) -> None:
    """Raise ValueError when ``gold`` cannot be compared in this mode."""
    if match == "number":
        _gold_number(gold)
    elif match == "choice":
        _gold_letter(gold)
    elif match == "yesno":
        _gold_yes_no(gold)
    elif not normalize(gold):
        # "The" or "..." normalises to nothing, and nothing is in every answer.
        raise ValueError(f"gold answer {gold!r} is empty once normalised")


def check(answer: str, gold: Sequence[str], match: Match) -> bool:
    """Whether ``answer`` is right for any of the ``gold`` answers in this mode."""
    if not gold:
        raise ValueError("no gold answers")
    for item in gold:
        validate_gold(item, match)
    if not answer.strip():
        return False
    if match == "contains":
        # Normalised text is single-space separated words, so padding both sides
        # with spaces makes substring search a whole-word search.
        padded = f" {normalize(answer)} "
        return any(f" {normalize(item)} " in padded for item in gold)
    if match == "exact":
        normalised = normalize(answer)
        return any(normalised == normalize(item) for item in gold)
    if match == "number":
        value = last_number(answer)
        if value is None:
            return False
        return any(_same_number(value, _gold_number(item)) for item in gold)
    if match == "yesno":
        verdict = yes_or_no(answer)
        return verdict is not None and any(verdict == _gold_yes_no(item) for item in gold)
    letter = chosen_letter(answer)
    return letter is not None and any(letter == _gold_letter(item) for item in gold)
