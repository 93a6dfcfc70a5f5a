from __future__ import annotations

import math

import numpy as np
import pytest

from local_model.logprobs import (
    log_normalizer,
    log_normalizer_and_entropy,
    token_logprob,
    top_logprobs,
)


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


def _reference_entropy(logits: np.ndarray) -> float:
    logp = _reference(logits)
    return float(-(np.exp(logp) * logp).sum())


def _scratch(n: int) -> tuple[np.ndarray, np.ndarray]:
    return np.empty(n, dtype=np.float32), np.empty(n, dtype=np.float32)


def test_entropy_matches_a_direct_float64_computation() -> None:
    rng = np.random.default_rng(1)
    for scale in (0.1, 1.0, 3.0, 10.0):
        logits = rng.normal(0, scale, size=49152).astype(np.float32)
        normalizer, entropy = log_normalizer_and_entropy(logits, *_scratch(logits.size))
        assert normalizer == pytest.approx(log_normalizer(logits), abs=1e-5)
        assert entropy == pytest.approx(_reference_entropy(logits), rel=1e-4)


def test_entropy_by_hand() -> None:
    # Uniform over 4: ln 4. Two tokens at p = 1/(1+e^-1) and 1/(1+e): the binary entropy.
    _, uniform = log_normalizer_and_entropy(np.zeros(4, dtype=np.float32), *_scratch(4))
    assert uniform == pytest.approx(math.log(4), abs=1e-6)
    p = 1 / (1 + math.exp(-1))
    _, binary = log_normalizer_and_entropy(np.array([5.0, 4.0], dtype=np.float32), *_scratch(2))
    assert binary == pytest.approx(-(p * math.log(p) + (1 - p) * math.log(1 - p)), abs=1e-6)


def test_entropy_of_a_confident_row_is_small_and_not_negative() -> None:
    # Large logits (as a real model's): log S - (dot(e, logits) - peak * S) / S would cancel
    # to an error near 40 * 1e-7, far larger than this entropy (1.4e-7).
    logits = np.full(49152, 10.0, dtype=np.float32)
    logits[7] = 40.0
    _, entropy = log_normalizer_and_entropy(logits, *_scratch(logits.size))
    assert entropy == pytest.approx(_reference_entropy(logits), abs=1e-8)
    assert 0.0 < entropy < 2e-7
    one_hot = np.array([1000.0, -1000.0, -1000.0], dtype=np.float32)
    assert log_normalizer_and_entropy(one_hot, *_scratch(3))[1] == 0.0


def test_entropy_ignores_masked_tokens() -> None:
    logits = np.array([0.0, 0.0, -np.inf], dtype=np.float32)
    normalizer, entropy = log_normalizer_and_entropy(logits, *_scratch(3))
    assert normalizer == pytest.approx(math.log(2))
    assert entropy == pytest.approx(math.log(2))
