"""Log-probabilities from one row of logits, without llama-cpp's ``logits_all`` path.

With ``logits_all=False`` llama.cpp still keeps the logits of the last decoded
position; a log-sum-exp over that row gives the sampled token's log-probability
for a few tens of microseconds per token, and one more product and sum over
the same row give the entropy of the whole next-token distribution.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

Logits = npt.NDArray[np.float32]


def log_normalizer(logits: Logits, scratch: Logits | None = None) -> float:
    """``log(sum(exp(logits)))``, computed stably.

    ``scratch`` (same shape) avoids two allocations per call on the hot path;
    numpy's pairwise float32 sum keeps the relative error near 1e-7.
    """
    if scratch is None:
        scratch = np.empty_like(logits)
    peak = logits.max()
    np.subtract(logits, peak, out=scratch)
    np.exp(scratch, out=scratch)
    return float(peak) + float(np.log(scratch.sum()))


def log_normalizer_and_entropy(
    logits: Logits, shifted: Logits, weights: Logits
) -> tuple[float, float]:
    """``log(sum(exp(logits)))`` and the entropy (nats) of ``softmax(logits)``.

    With ``peak = max(logits)``, ``e = exp(logits - peak)`` and ``S = sum(e)``,
    the entropy is ``-sum(p * log p) = log S - sum(e * (logits - peak)) / S``.
    ``shifted`` and ``weights`` (same shape as ``logits``; both overwritten)
    keep ``logits - peak`` and ``e`` side by side: every term of the second sum
    is then <= 0, so it adds up without the cancellation that
    ``dot(e, logits) - peak * S`` would suffer on confident rows, where the
    entropy is tiny and both terms are large. The product and pairwise sum
    cost one more pass over the row than :func:`log_normalizer`; ``np.dot``
    would hand it to BLAS, whose worker threads cost more than they save here
    (bench/local_path.py's loop: +38 against +24 microseconds a token).
    """
    peak = logits.max()
    np.subtract(logits, peak, out=shifted)
    np.exp(shifted, out=weights)
    total = float(weights.sum())
    log_total = float(np.log(total))
    with np.errstate(invalid="ignore"):
        expected = float(np.multiply(weights, shifted, out=weights).sum())
    if math.isnan(expected):
        # A -inf logit (a masked token) gives 0 * -inf; such a token adds nothing.
        np.exp(shifted, out=weights)
        kept = np.where(weights > 0, shifted, np.float32(0.0))
        expected = float(np.multiply(weights, kept, out=weights).sum())
    # Rounding can leave a one-hot row a hair below zero; entropy is never negative.
    entropy = max(0.0, log_total - expected / total)
    return float(peak) + log_total, entropy


def token_logprob(logits: Logits, token_id: int, normalizer: float | None = None) -> float:
    if normalizer is None:
        normalizer = log_normalizer(logits)
    return float(logits[token_id]) - normalizer


def top_logprobs(logits: Logits, k: int, normalizer: float) -> list[tuple[int, float]]:
    """The ``k`` most likely token ids with their log-probabilities, best first."""
    if k <= 0:
        return []
    k = min(k, logits.shape[0])
    candidates = np.argpartition(logits, -k)[-k:]
    ordered = candidates[np.argsort(logits[candidates])[::-1]]
    return [(int(i), float(logits[i]) - normalizer) for i in ordered]
