"""Log-probabilities from one row of logits, without llama-cpp's ``logits_all`` path.

With ``logits_all=False`` llama.cpp still keeps the logits of the last decoded
position; a log-sum-exp over that row gives the sampled token's log-probability
for a few tens of microseconds per token.
"""

from __future__ import annotations

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
