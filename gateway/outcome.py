"""What the gateway did with a request, as the client sees it (headers and body field)."""

from __future__ import annotations

from typing import Any, Literal

from local_model.values import value

VisibleRoute = Literal["local", "cloud", "local->cloud"]


@value
class Outcome:
    route: VisibleRoute
    #: the rule that decided (router reason), e.g. "default" or "privacy-floor"
    reason: str
    confidence: float | None = None
    threshold: float | None = None
    #: why the answer is not what the policy wanted ("cloud-unavailable", "cloud-error",
    #: "budget-exhausted")
    degraded: str | None = None

    def headers(self) -> dict[str, str]:
        headers = {"x-hybrid-route": self.route, "x-hybrid-reason": self.reason}
        if self.confidence is not None:
            headers["x-hybrid-confidence"] = f"{self.confidence:.4f}"
        if self.degraded is not None:
            headers["x-hybrid-degraded"] = self.degraded
        return headers

    def body_field(self) -> dict[str, Any]:
        """Extra top-level field for JSON bodies; OpenAI clients ignore unknown fields."""
        info: dict[str, Any] = {"route": self.route, "reason": self.reason}
        if self.confidence is not None:
            info["confidence"] = self.confidence
            info["threshold"] = self.threshold
        if self.degraded is not None:
            info["degraded"] = self.degraded
        return {"hybrid": info}
