"""The post-generation confidence gate: does a local answer stand, or escalate?

Signals summarise the answer's token log-probabilities (natural log, <= 0)
and, when the engine reports them, the entropies (nats, >= 0) of the
next-token distributions the tokens were drawn from. Entropy signals are
negated (``neg_*``) so that every single signal reads the same way: higher is
more confident, at most 0, escalate below the threshold.
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
from typing import Literal, get_args

from pydantic import Field, ValidationInfo, field_validator

from router.schema import Section, StrictFloat, StrictInt

EntropySignal = Literal[
    "neg_mean_entropy",
    "neg_max_entropy",
    "neg_entropy_quantile",
    "neg_first_k_mean_entropy",
    "neg_first_k_max_entropy",
]
Signal = Literal[
    "mean",
    "min",
    "quantile",
    "first_k_min",
    "neg_mean_entropy",
    "neg_max_entropy",
    "neg_entropy_quantile",
    "neg_first_k_mean_entropy",
    "neg_first_k_max_entropy",
    "logistic",
]
Feature = Literal[
    "mean",
    "min",
    "quantile",
    "first_k_min",
    "length",
    "log_prompt_tokens",
    "neg_mean_entropy",
    "neg_max_entropy",
    "neg_entropy_quantile",
    "neg_first_k_mean_entropy",
    "neg_first_k_max_entropy",
]
#: the features computed from per-token entropies: only there when the caller has them
_ENTROPY_ORDER: tuple[str, ...] = get_args(EntropySignal)
ENTROPY_FEATURES: frozenset[str] = frozenset(_ENTROPY_ORDER)


class MissingEntropiesError(ValueError):
    """The gate needs per-token entropies and the caller has none to give.

    The gateway's own engine reports an entropy with every token, so this is a
    wiring error (an engine or a caller that drops them), not a request's fault.
    """


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


def _summaries(values: Sequence[float], quantile: float, first_k: int) -> dict[str, float]:
    """mean, min, quantile, first_k_min, first_k_mean of non-empty ``values``."""
    head = values[:first_k]
    return {
        "mean": math.fsum(values) / len(values),
        "min": min(values),
        "quantile": interpolated_quantile(values, quantile),
        "first_k_min": min(head),
        "first_k_mean": math.fsum(head) / len(head),
    }


def confidence_signals(
    logprobs: Sequence[float],
    *,
    quantile: float,
    first_k: int,
    prompt_tokens: int = 0,
    entropies: Sequence[float] | None = None,
) -> dict[str, float]:
    """Every feature the gate can use, by name.

    The answer's: log-probability summaries and its length in tokens. The
    prompt's: ``log_prompt_tokens``, ln(1 + its length in tokens by the local
    tokenizer); 0 when the caller does not know it. With no tokens the
    log-probability features are -inf (nothing supports the answer) and length is 0.

    With ``entropies`` (one per token, nats) also the ``neg_*`` entropy features,
    summaries of the negated entropies: ``neg_mean_entropy`` (-mean),
    ``neg_max_entropy`` (-max), ``neg_entropy_quantile`` (the ``quantile`` of
    the negated entropies, i.e. minus the (1 - quantile) quantile of the
    entropies), ``neg_first_k_mean_entropy`` and ``neg_first_k_max_entropy``
    (over the first ``first_k`` tokens); -inf with no tokens. Without
    ``entropies`` those features are absent.
    """
    if entropies is not None and len(entropies) != len(logprobs):
        raise ValueError(f"{len(logprobs)} log-probabilities but {len(entropies)} entropies")
    prompt = math.log1p(max(0, prompt_tokens))
    if logprobs:
        own = _summaries(logprobs, quantile, first_k)
        mean, low, inner, first = own["mean"], own["min"], own["quantile"], own["first_k_min"]
    else:
        mean = low = inner = first = -math.inf
    features = {
        "mean": mean,
        "min": low,
        "quantile": inner,
        "first_k_min": first,
        "length": float(len(logprobs)),
        "log_prompt_tokens": prompt,
    }
    if entropies is not None:
        if not entropies:
            features.update(dict.fromkeys(_ENTROPY_ORDER, -math.inf))
            return features
        neg = _summaries([-h for h in entropies], quantile, first_k)
        features.update(
            neg_mean_entropy=neg["mean"],
            neg_max_entropy=neg["min"],
            neg_entropy_quantile=neg["quantile"],
            neg_first_k_mean_entropy=neg["first_k_mean"],
            neg_first_k_max_entropy=neg["first_k_min"],
        )
    return features


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
            "length (answer tokens), log_prompt_tokens (ln(1 + prompt tokens)), and the "
            "negated entropy summaries neg_mean_entropy, neg_max_entropy, "
            "neg_entropy_quantile, neg_first_k_mean_entropy, neg_first_k_max_entropy."
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
            "Confidence signal over the answer's token log-probabilities (mean, min, "
            "quantile, first_k_min), over its tokens' negated entropies (neg_mean_entropy, "
            "neg_max_entropy, neg_entropy_quantile, neg_first_k_mean_entropy, "
            "neg_first_k_max_entropy), or logistic (a probability from the logistic section)."
        ),
    )
    threshold: StrictFloat = Field(
        -3.0,
        description=(
            "Escalate when confidence < threshold. A log-probability (<= 0) for mean, min, "
            "quantile and first_k_min; minus an entropy in nats (<= 0) for the neg_* "
            "signals; a probability in [0, 1] for logistic. "
            "Calibrate it: the default only suits SmolLM2-135M at its default sampling."
        ),
    )
    quantile: StrictFloat = Field(
        0.1,
        ge=0.0,
        le=1.0,
        description="Which quantile quantile and neg_entropy_quantile take (0.1 = 10th).",
    )
    first_k: StrictInt = Field(
        8, ge=1, description="How many leading tokens the first_k signals look at."
    )
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
            unit = "a negated entropy" if signal in ENTROPY_FEATURES else "a log-probability"
            raise ValueError(
                f"the {signal} signal is {unit} (<= 0): a positive threshold "
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

    @property
    def needs_entropies(self) -> bool:
        """Whether scoring needs the tokens' entropies (an entropy signal, or a
        logistic model that weighs an entropy feature)."""
        if self.signal == "logistic":
            return self.logistic is not None and not ENTROPY_FEATURES.isdisjoint(
                self.logistic.weights
            )
        return self.signal in ENTROPY_FEATURES

    def score(
        self,
        logprobs: Sequence[float],
        *,
        prompt_tokens: int = 0,
        entropies: Sequence[float] | None = None,
    ) -> float:
        """The configured signal; with no tokens, the lowest possible confidence.

        ``prompt_tokens`` (the prompt's length by the local tokenizer) feeds the
        logistic signal's ``log_prompt_tokens`` feature; callers that know it pass it.
        ``entropies`` (one per token) feed the entropy signals and features; a gate
        that needs them raises :class:`MissingEntropiesError` without them, rather
        than judge on a guess.
        """
        if entropies is None and self.needs_entropies:
            raise MissingEntropiesError(
                f"the gate's {self.signal} signal needs the tokens' entropies, and none were given"
            )
        if self.signal == "logistic":
            if not logprobs:
                return 0.0
            assert self.logistic is not None  # validation guarantees it
            features = confidence_signals(
                logprobs,
                quantile=self.quantile,
                first_k=self.first_k,
                prompt_tokens=prompt_tokens,
                entropies=entropies,
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
        if self.signal == "first_k_min":
            return min(logprobs[: self.first_k])
        features = confidence_signals(
            logprobs, quantile=self.quantile, first_k=self.first_k, entropies=entropies
        )
        return features[self.signal]

    def judge(
        self,
        logprobs: Sequence[float],
        *,
        prompt_tokens: int = 0,
        entropies: Sequence[float] | None = None,
    ) -> GateVerdict:
        confidence = self.score(logprobs, prompt_tokens=prompt_tokens, entropies=entropies)
        # An empty answer carries no evidence that it is right: escalate it even
        # when the threshold is 0, which its confidence would otherwise equal.
        escalate = not logprobs or confidence < self.threshold
        return GateVerdict(confidence=confidence, threshold=self.threshold, escalate=escalate)

    def below_hard_floor(self, logprob: float) -> bool:
        """True when one token alone is reason enough to stop generating locally."""
        return self.hard_floor is not None and logprob < self.hard_floor
