from __future__ import annotations

import math

import numpy as np
import pytest

from local_model.logprobs import log_normalizer, token_logprob, top_logprobs


def _reference(logits: np.ndarray) -> np.ndarray:
    wide = logits.astype(np.float64)
    return wide - math.log(sum(math.exp(x) for x in wide))


def test_matches_float64_reference() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(0, 3, size=512).astype(np.float32)
    reference = _reference(logits)
    for token in (0, 17, 511):
        assert token_logprob(logits, token) == pytest.approx(reference[token], abs=1e-5)


def test_stable_with_huge_logits() -> None:
    logits = np.array([1000.0, 999.0, -1000.0], dtype=np.float32)
    assert math.isfinite(log_normalizer(logits))
    assert token_logprob(logits, 0) == pytest.approx(-math.log1p(math.exp(-1)), abs=1e-6)


def test_top_logprobs_sorted_best_first() -> None:
    logits = np.array([0.5, 3.0, -1.0, 2.0], dtype=np.float32)
    norm = log_normalizer(logits)
    top = top_logprobs(logits, 3, norm)
    assert [i for i, _ in top] == [1, 3, 0]
    assert top[0][1] == pytest.approx(token_logprob(logits, 1))
    assert top_logprobs(logits, 0, norm) == []
    assert len(top_logprobs(logits, 10, norm)) == 4
