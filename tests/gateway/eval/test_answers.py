"""Answer checking: the tricky cases each mode must get right."""

from __future__ import annotations

import pytest

from gateway.eval.answers import (
    Match,
    check,
    chosen_letter,
    last_number,
    normalize,
    yes_or_no,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The capital is Paris.", "capital is paris"),
        ("  An   apple,\ta day! ", "apple day"),
        ("A", ""),
        ("“Quoted” — dash…", "quoted dash"),
        ("1,234", "1234"),
        ("theory", "theory"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    assert normalize(text) == expected


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("The capital is Paris.", ["paris"], True),
        ("Parisian cafés", ["Paris"], False),
        ("It is New York City", ["new york"], True),
        ("It is Newark", ["new york", "newark"], True),
        ("The Eiffel Tower", ["eiffel tower"], True),
        ("no idea", ["paris"], False),
        ("", ["paris"], False),
        ("   ", ["paris"], False),
    ],
)
def test_contains(answer: str, gold: list[str], expected: bool) -> None:
    assert check(answer, gold, "contains") is expected


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("The Paris!", ["paris"], True),
        ("Paris, France", ["paris"], False),
        ("", ["paris"], False),
    ],
)
def test_exact(answer: str, gold: list[str], expected: bool) -> None:
    assert check(answer, gold, "exact") is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Answer: 1,234.0", 1234.0),
        ("-3", -3.0),
        ("5-3 = 2, so -7", -7.0),
        ("pages 10-12", 12.0),
        ("It costs $1,234, roughly", 1234.0),
        ("50%", 50.0),
        ("3/4 of it", 0.75),
        ("x2 and v1.2", None),
        ("1/0 then 7", 7.0),
        ("\N{MINUS SIGN}2.5", -2.5),
        (".5", 0.5),
        ("no digits here", None),
        ("first 12, then 13.", 13.0),
    ],
)
def test_last_number(text: str, expected: float | None) -> None:
    assert last_number(text) == expected


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("Answer: 1,234.0", ["1234"], True),
        ("Answer: 1234", ["1,234"], True),
        ("-3", ["3"], False),
        ("The result is 3", ["-3", "3"], True),
        ("First 42, then corrected to 41", ["42"], False),
        ("0.1 + 0.2 = 0.30000000000000004", ["0.3"], True),
        ("1000001", ["1000000"], False),
        ("nothing", ["3"], False),
        ("", ["3"], False),
    ],
)
def test_number(answer: str, gold: list[str], expected: bool) -> None:
    assert check(answer, gold, "number") is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("B", "B"),
        ("(b)", "B"),
        ("a", "A"),
        ("A", "A"),
        ("[C].", "C"),
        ("The answer is C.", "C"),
        ("C) Paris", "C"),
        ("D. Lyon", "D"),
        ("I think the answer is (B) because A is wrong", "B"),
        ("answer: (d)", "D"),
        ("The answer is a tricky one, but (E)", "E"),
        ("A cat would pick B", "B"),
        ("I pick C", "C"),
        ("none of these", None),
        ("", None),
        ("F", None),
    ],
)
def test_chosen_letter(text: str, expected: str | None) -> None:
    assert chosen_letter(text) == expected


def test_choice_check_and_article_a() -> None:
    # "A" normalises away as an article, but choice mode still reads it.
    assert normalize("A") == ""
    assert check("A", ["a"], "choice")
    assert check("(a)", ["A"], "choice")
    assert not check("B", ["A"], "choice")
    assert not check("", ["A"], "choice")


@pytest.mark.parametrize(
    ("gold", "match"),
    [
        (["no number"], "number"),
        (["1 or 2"], "number"),
        (["AB"], "choice"),
        (["The"], "exact"),
        (["maybe"], "yesno"),
        (["yes!"], "yesno"),
    ],
)
def test_unreadable_gold_is_an_error(gold: list[str], match: Match) -> None:
    with pytest.raises(ValueError, match="gold answer"):
        check("anything 1 A", gold, match)


def test_no_gold_is_an_error() -> None:
    with pytest.raises(ValueError, match="no gold"):
        check("Paris", [], "contains")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Yes.", "yes"),
        ("no", "no"),
        ("No, because yes-men agree.", "no"),
        ("Yes and no.", "yes"),
        ("The answer is yes", "yes"),
        ("TRUE", "yes"),
        ("That is false.", "no"),
        ("Nope, not at all", None),
        ("Noah and Yesenia", None),
        ("Not in this passage.", None),
        ("", None),
    ],
)
def test_yes_or_no(text: str, expected: str | None) -> None:
    assert yes_or_no(text) == expected


@pytest.mark.parametrize(
    ("answer", "gold", "expected"),
    [
        ("Yes, it is.", ["yes"], True),
        ("Yes, it is.", ["No"], False),
        ("no.", [" NO "], True),
        ("I cannot tell.", ["no"], False),
        ("", ["yes"], False),
    ],
)
def test_yesno(answer: str, gold: list[str], expected: bool) -> None:
    assert check(answer, gold, "yesno") is expected
