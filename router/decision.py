"""Where a request goes, and why."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: ``local_then_check``: answer locally, then let the confidence gate decide
#: whether the answer stands or the request escalates to the cloud.
Route = Literal["local", "cloud", "local_then_check"]


@dataclass(frozen=True)
class Decision:
    """Where a request goes and the name of the rule that sent it there."""

    route: Route
    #: the rule name, or one of "model-pinned-local", "model-pinned-cloud",
    #: "privacy-floor", "default"
    reason: str
    #: False when the privacy floor matched: the request must never leave the machine
    cloud_allowed: bool = True
    #: the name of the privacy detector or pattern that matched, never the matched text,
    #: so the decision can be logged and returned in headers safely
    privacy_match: str | None = None
