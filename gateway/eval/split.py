"""Which items a run uses, and which of them a fit may see.

Everything here is deterministic for a given seed, so a result can be
reproduced from its command line:

- :func:`select` shuffles the dataset with a seeded RNG and keeps the first
  ``limit`` items: a sample from the whole file, not its first lines (which
  in the shipped datasets are often sorted by source or difficulty).
- :func:`split` and :func:`folds` assign each item by a hash of the seed and
  its id alone, so an item keeps its side when others are added or removed,
  and no item can be on both sides.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from typing import TypeVar

from gateway.eval.dataset import EvalItem

T = TypeVar("T")


def select(items: Sequence[T], *, seed: int, limit: int | None) -> list[T]:
    """The items in a seeded random order, cut to ``limit`` (None = all)."""
    if limit is not None and limit < 1:
        raise ValueError(f"limit must be at least 1, got {limit}")
    chosen = list(items)
    random.Random(seed).shuffle(chosen)
    return chosen if limit is None else chosen[:limit]


def _rank(seed: int, item_id: str) -> bytes:
    return hashlib.sha256(f"{seed}\0{item_id}".encode()).digest()


def _hash_order(items: Sequence[EvalItem], seed: int) -> list[int]:
    ids = [item.id for item in items]
    if len(set(ids)) != len(ids):
        raise ValueError("item ids must be unique")
    return sorted(range(len(items)), key=lambda i: _rank(seed, ids[i]))


def split(
    items: Sequence[EvalItem], *, fraction: float, seed: int
) -> tuple[list[EvalItem], list[EvalItem]]:
    """(calibration, held-out): ``fraction`` of the items (rounded, at least one
    and at most all but one) to fit on, the rest to report on.

    Both keep the input order. Raises ValueError for fewer than two items or a
    fraction outside (0, 1).
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"the calibration fraction must be in (0, 1), got {fraction}")
    if len(items) < 2:
        raise ValueError("a split needs at least two items")
    count = min(max(round(fraction * len(items)), 1), len(items) - 1)
    calibration = set(_hash_order(items, seed)[:count])
    return (
        [item for i, item in enumerate(items) if i in calibration],
        [item for i, item in enumerate(items) if i not in calibration],
    )


def folds(items: Sequence[EvalItem], *, k: int, seed: int) -> list[int]:
    """The fold (0 .. k-1) of each item, for cross-fitting: sizes differ by at most one."""
    if k < 2:
        raise ValueError(f"cross-fitting needs at least 2 folds, got {k}")
    assignment = [0] * len(items)
    for position, index in enumerate(_hash_order(items, seed)):
        assignment[index] = position % k
    return assignment
