"""The post-generation confidence gate: does a local answer stand, or escalate?

Signals summarise the answer's token log-probabilities (natural log, <= 0).
On SmolLM2-135M-Instruct (held-out TriviaQA, docs/routing-eval.md) the minimum
separates right from wrong answers as well as the other summaries or a fitted
logistic model (AUROC about 0.66) without any fitting, hence the default.
Thresholds depend on the model, the prompts and the sampling settings:
calibrate them on your traffic (``hybrid-gateway calibrate``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from pydantic import Field, ValidationInfo, field_validator

from router.schema import Section, StrictFloat, StrictInt

Signal = Literal["mean", "min", "quantile", "first_k_min", "logistic"]
Feature = Literal["mean", "min", "quantile", "first_k_min", "length", "log_prompt_tokens"]


@dataclass(frozen=True)
class GateVerdict:
    confidence: float
    threshold: float
    #: confidence < threshold; a confidence equal to the threshold passes
    escalate: bool


def interpolated_quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics
    (numpy's default method)."""
    ordered = sorted(values)
    position = q * (len(ordered) - 1)
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def confidence_signals(
    logprobs: Sequence[float], *, quantile: float, first_k: int, prompt_tokens: int = 0
) -> dict[str, float]:
    """Every feature the gate can use, by name.

    The answer's: log-probability summaries and its length in tokens. The
    prompt's: ``log_prompt_tokens``, ln(1 + its length in tokens by the local
    tokenizer); 0 when the caller does not know it. With no tokens the
    log-probability features are -inf (nothing supports the answer) and length is 0.
    """
    prompt = math.log1p(max(0, prompt_tokens))
    if not logprobs:
        none = -math.inf
        return {
            "mean": none,
            "min": none,
            "quantile": none,
            "first_k_min": none,
            "length": 0.0,
            "log_prompt_tokens": prompt,
        }
    return {
        "mean": math.fsum(logprobs) / len(logprobs),
        "min": min(logprobs),
        "quantile": interpolated_quantile(logprobs, quantile),
        "first_k_min": min(logprobs[:first_k]),
        "length": float(len(logprobs)),
        "log_prompt_tokens": prompt,
    }


def _sigmoid(z: float) -> float:
    # Two branches so exp never overflows, whatever the weights.
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)


class LogisticGate(Section):
    """A logistic model of P(the local answer is right) over the confidence features."""

    intercept: StrictFloat = Field(0.0, description="The model's intercept (bias).")
    weights: dict[Feature, StrictFloat] = Field(
        min_length=1,
        description=(
            "Weight per feature: mean, min, quantile, first_k_min (log-probabilities), "
            "length (answer tokens) and log_prompt_tokens (ln(1 + prompt tokens))."
        ),
    )

    def probability(self, features: Mapping[str, float]) -> float:
        z = self.intercept + math.fsum(w * features[name] for name, w in self.weights.items())
        return _sigmoid(z)


class GatePolicy(Section):
    """How a local_then_check answer is judged."""

    signal: Signal = Field(
        "min",
        description=(
            "Confidence signal over the answer's token log-probabilities: mean, min, "
            "quantile, first_k_min, or logistic (a probability from the logistic section)."
        ),
    )
    threshold: StrictFloat = Field(
        -3.0,
        description=(
            "Escalate when confidence < threshold. A log-probability (<= 0) for mean, min, "
            "quantile and first_k_min; a probability in [0, 1] for logistic. "
            "Calibrate it: the default only suits SmolLM2-135M at its default sampling."
        ),
    )
    quantile: StrictFloat = Field(
        0.1, ge=0.0, le=1.0, description="Which quantile the quantile signal takes (0.1 = 10th)."
    )
    first_k: StrictInt = Field(8, ge=1, description="How many leading tokens first_k_min looks at.")
    logistic: LogisticGate | None = Field(
        None,
        validate_default=True,
        description="Intercept and weights; required when signal is logistic, else unused.",
    )
    holdback_tokens: StrictInt = Field(
        16,
        ge=0,
        description=(
            "Streaming: tokens held back (or the whole answer, if shorter) and judged "
            "before anything is sent to the client."
        ),
    )
    hard_floor: StrictFloat | None = Field(
        None,
        le=0.0,
        description=(
            "Abort local generation and escalate as soon as one token's log-probability "
            "falls below this (null = never)."
        ),
    )

    @field_validator("threshold")
    @classmethod
    def _threshold_in_signal_units(cls, value: float, info: ValidationInfo) -> float:
        signal = info.data.get("signal")
        if signal == "logistic" and not 0.0 <= value <= 1.0:
            raise ValueError("the logistic signal is a probability: use a threshold in [0, 1]")
        if signal not in (None, "logistic") and value > 0.0:
            raise ValueError(
                f"the {signal} signal is a log-probability (<= 0): a positive threshold "
                "would escalate every answer"
            )
        return value

    @field_validator("logistic")
    @classmethod
    def _logistic_present(
        cls, value: LogisticGate | None, info: ValidationInfo
    ) -> LogisticGate | None:
        if info.data.get("signal") == "logistic" and value is None:
            raise ValueError("required when signal is logistic (intercept and weights)")
        return value

    def score(self, logprobs: Sequence[float], *, prompt_tokens: int = 0) -> float:
        """The configured signal; with no tokens, the lowest possible confidence.

        ``prompt_tokens`` (the prompt's length by the local tokenizer) feeds the
        logistic signal's ``log_prompt_tokens`` feature; callers that know it pass it.
        """
        if self.signal == "logistic":
            if not logprobs:
                return 0.0
            assert self.logistic is not None  # validation guarantees it
            features = confidence_signals(
                logprobs, quantile=self.quantile, first_k=self.first_k, prompt_tokens=prompt_tokens
            )
            return self.logistic.probability(features)
        if not logprobs:
            return -math.inf
        if self.signal == "min":
            return min(logprobs)
        if self.signal == "mean":
            return math.fsum(logprobs) / len(logprobs)
        if self.signal == "quantile":
            return interpolated_quantile(logprobs, self.quantile)
        return min(logprobs[: self.first_k])

    def judge(self, logprobs: Sequence[float], *, prompt_tokens: int = 0) -> GateVerdict:
        confidence = self.score(logprobs, prompt_tokens=prompt_tokens)
        # An empty answer carries no evidence that it is right: escalate it even
        # when the threshold is 0, which its confidence would otherwise equal.
        escalate = not logprobs or confidence < self.threshold
        return GateVerdict(confidence=confidence, threshold=self.threshold, escalate=escalate)

    def below_hard_floor(self, logprob: float) -> bool:
        """True when one token alone is reason enough to stop generating locally."""
        return self.hard_floor is not None and logprob < self.hard_floor
