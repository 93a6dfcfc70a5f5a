"""The common ground of every section of a policy file."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Self

from pydantic import BaseModel, ConfigDict, Strict

# YAML happily turns `yes` into True and `1e3` into a string; strict scalars make
# such slips schema errors instead of silently coerced values.
StrictInt = Annotated[int, Strict()]
StrictFloat = Annotated[float, Strict()]
StrictStr = Annotated[str, Strict()]


class Section(BaseModel):
    """A policy section: unknown keys are errors (a typo must not disable a rule),
    infinities and NaN are refused, and a loaded policy cannot be changed."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """A copy with ``update`` applied and validated.

        Sections keep compiled patterns and lookup tables in cached properties;
        pydantic's own model_copy would carry them over unchanged (and skip
        validation of the update). Sections are immutable, so ``deep`` changes
        nothing.
        """
        return self.model_validate({**dict(self), **(update or {})})
