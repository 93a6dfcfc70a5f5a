from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Route = Literal["local", "cloud"]


@dataclass(frozen=True)
class Decision:
    """Where a request goes and the name of the rule that sent it there."""

    route: Route
    reason: str
