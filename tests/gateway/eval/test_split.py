"""Selection, the calibration/held-out split and cross-fitting folds: deterministic and disjoint."""

from __future__ import annotations

import pytest

from gateway.eval.dataset import EvalItem
from gateway.eval.split import folds, select, split


def _items(n: int, prefix: str = "q") -> list[EvalItem]:
    return [
        EvalItem(id=f"{prefix}{i}", answers=("x",), match="contains", prompt="?") for i in range(n)
    ]


def _ids(items: list[EvalItem]) -> list[str]:
    return [item.id for item in items]


def test_select_is_a_seeded_shuffle() -> None:
    items = _items(50)
    first = select(items, seed=3, limit=10)
    assert first == select(items, seed=3, limit=10)
    assert len(first) == 10
    assert first != items[:10]
    assert select(items, seed=4, limit=10) != first
    assert sorted(_ids(select(items, seed=3, limit=None))) == sorted(_ids(items))
    assert len(select(items, seed=0, limit=500)) == 50
    with pytest.raises(ValueError, match="at least 1"):
        select(items, seed=0, limit=0)


def test_split_is_deterministic_disjoint_and_complete() -> None:
    items = _items(101)
    fit, held = split(items, fraction=0.5, seed=0)
    assert (fit, held) == split(items, fraction=0.5, seed=0)
    assert len(fit) == 50  # round(50.5) is 50: Python rounds halves to even
    assert len(held) == 51
    assert not set(_ids(fit)) & set(_ids(held))
    assert sorted(_ids(fit) + _ids(held)) == sorted(_ids(items))
    # Both sides keep the input order.
    assert _ids(fit) == [i for i in _ids(items) if i in set(_ids(fit))]
    assert split(items, fraction=0.5, seed=1)[0] != fit


def test_split_side_depends_on_the_item_alone() -> None:
    items = _items(40)
    fit, _ = split(items, fraction=0.5, seed=7)
    # Reordering the input does not move an item to the other side.
    again, _ = split(list(reversed(items)), fraction=0.5, seed=7)
    assert set(_ids(again)) == set(_ids(fit))


@pytest.mark.parametrize(
    ("n", "fraction", "fit_size"), [(2, 0.5, 1), (3, 0.01, 1), (3, 0.99, 2), (10, 0.3, 3)]
)
def test_split_keeps_one_item_on_each_side(n: int, fraction: float, fit_size: int) -> None:
    fit, held = split(_items(n), fraction=fraction, seed=0)
    assert len(fit) == fit_size
    assert len(held) == n - fit_size


def test_split_refuses_what_cannot_be_split() -> None:
    with pytest.raises(ValueError, match="at least two"):
        split(_items(1), fraction=0.5, seed=0)
    for fraction in (0.0, 1.0, -0.1):
        with pytest.raises(ValueError, match=r"\(0, 1\)"):
            split(_items(4), fraction=fraction, seed=0)
    duplicated = _items(3) + _items(1)
    with pytest.raises(ValueError, match="unique"):
        split(duplicated, fraction=0.5, seed=0)


def test_folds_are_balanced_and_seeded() -> None:
    items = _items(23)
    assignment = folds(items, k=5, seed=0)
    assert assignment == folds(items, k=5, seed=0)
    sizes = [assignment.count(fold) for fold in range(5)]
    assert sorted(sizes) == [4, 4, 5, 5, 5]
    assert folds(items, k=5, seed=1) != assignment
    with pytest.raises(ValueError, match="at least 2 folds"):
        folds(items, k=1, seed=0)
