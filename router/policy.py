"""A routing policy: which model ids exist, and where each request goes."""

from __future__ import annotations

from functools import cached_property
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from router.decision import Decision, Route
from router.facts import RequestFacts
from router.gate import GatePolicy
from router.privacy import PrivacyPolicy
from router.rules import Rule
from router.schema import Section, StrictStr

Target = Literal["routed", "local", "cloud"]


def _check_model_id(model_id: str) -> str:
    if not 1 <= len(model_id) <= 128 or any(char.isspace() for char in model_id):
        raise PydanticCustomError("model_id", "a model id is 1-128 characters without spaces")
    return model_id


ModelId = Annotated[StrictStr, AfterValidator(_check_model_id)]

#: reasons the router gives itself; a rule may not take one of these names, or a
#: log line could not tell which one decided
RESERVED_REASONS = frozenset(
    {"model-pinned-local", "model-pinned-cloud", "privacy-floor", "default"}
)

_PINNED_LOCAL = Decision("local", "model-pinned-local")
_PINNED_CLOUD = Decision("cloud", "model-pinned-cloud")


class ModelIds(Section):
    """The model ids clients may ask for."""

    routed: ModelId = Field("hybrid", description="The id the policy decides for.")
    local: ModelId = Field("local", description="The id that pins a request to the local model.")
    cloud: ModelId = Field(
        "cloud",
        description="The id that pins a request to the cloud (unknown while no cloud is set up).",
    )
    aliases: dict[ModelId, Target] = Field(
        default_factory=dict,
        description=(
            "Extra ids and what each stands for: routed, local or cloud "
            "(e.g. gpt-4o-mini: routed, so existing clients need no change)."
        ),
    )

    @model_validator(mode="after")
    def _distinct(self) -> ModelIds:
        if len({self.routed, self.local, self.cloud}) < 3:
            raise ValueError("routed, local and cloud must be three different ids")
        taken = sorted({self.routed, self.local, self.cloud} & set(self.aliases))
        if taken:
            raise ValueError(f"aliases: {', '.join(taken)} is already routed, local or cloud")
        return self


class Policy(Section):
    """A routing policy file. Every section is optional."""

    version: Literal[1] = Field(1, description="Format version of the policy file.")
    models: ModelIds = Field(default_factory=ModelIds, description="The model ids clients may use.")
    privacy: PrivacyPolicy = Field(
        default_factory=PrivacyPolicy,
        description="The privacy floor: matching requests never leave the machine.",
    )
    rules: tuple[Rule, ...] = Field(
        (), description="Pre-generation rules for the routed id, in order; the first match wins."
    )
    default: Route = Field(
        "local_then_check", description="Route of a routed request that no rule matched."
    )
    gate: GatePolicy = Field(
        default_factory=GatePolicy, description="The confidence gate for local_then_check."
    )
    on_cloud_unavailable: Literal["degrade", "fail"] = Field(
        "degrade",
        description=(
            "When a request should go to the cloud but none is configured (or it fails): "
            "'degrade' answers locally and marks the answer degraded, 'fail' answers 503."
        ),
    )
    on_budget_exhausted: Literal["local_only", "reject"] = Field(
        "local_only",
        description=(
            "When the client key's daily cloud budget is spent: 'local_only' answers its "
            "requests that could reach the cloud locally, marked degraded (budget-exhausted); "
            "'reject' answers them 429. Requests that stay local are served either way."
        ),
    )

    @field_validator("rules")
    @classmethod
    def _names_unique(cls, rules: tuple[Rule, ...]) -> tuple[Rule, ...]:
        problems = []
        first_seen: dict[str, int] = {}
        for index, rule in enumerate(rules):
            if rule.name in RESERVED_REASONS:
                problems.append(f"rules[{index}].name {rule.name!r} is reserved for the router")
            elif rule.name in first_seen:
                problems.append(
                    f"duplicate rule name {rule.name!r} (rules[{first_seen[rule.name]}] "
                    f"and rules[{index}])"
                )
            else:
                first_seen[rule.name] = index
        if problems:
            raise ValueError("; ".join(problems))
        return rules

    # cached_property, not pydantic private attributes: reading one of those goes
    # through __getattr__, which would cost more than the rest of decide().
    @cached_property
    def _targets(self) -> dict[str, Target]:
        models = self.models
        return {
            **models.aliases,
            models.routed: "routed",
            models.local: "local",
            models.cloud: "cloud",
        }

    @cached_property
    def _default(self) -> Decision:
        return Decision(self.default, "default")

    @cached_property
    def _prompt_token_thresholds(self) -> tuple[int, ...]:
        limits = {rule.match.prompt_tokens_over for rule in self.rules}
        return tuple(sorted(limit for limit in limits if limit is not None))

    def model_post_init(self, context: object, /) -> None:
        self._targets, self._default, self._prompt_token_thresholds  # noqa: B018

    def prompt_token_thresholds(self) -> tuple[int, ...]:
        """Every ``prompt_tokens_over`` in the rules, ascending: :meth:`decide` needs
        no exact prompt count when an upper bound on it is at most the first."""
        return self._prompt_token_thresholds

    def resolve(self, model: str, *, cloud_configured: bool) -> Target | None:
        """What a model id stands for, or None when it is unknown."""
        target = self._targets.get(model)
        if target == "cloud" and not cloud_configured:
            return None
        return target

    def model_ids(self, *, cloud_configured: bool) -> list[str]:
        """Ids a client may use: routed, local, cloud, then the available aliases."""
        models = self.models
        ids = [models.routed, models.local]
        if cloud_configured:
            ids.append(models.cloud)
        ids.extend(
            alias
            for alias, target in models.aliases.items()
            if cloud_configured or target != "cloud"
        )
        return ids

    def decide(self, facts: RequestFacts) -> Decision | None:
        """Where a request goes before generation; None for an unknown model id.

        Order: model id, privacy floor (overrides everything, even a cloud pin),
        model pins, rules (first match), default.
        """
        target = self.resolve(facts.model, cloud_configured=facts.cloud_configured)
        if target is None:
            return None
        match = self.privacy.first_match(facts)
        if match is not None:
            return Decision("local", "privacy-floor", cloud_allowed=False, privacy_match=match)
        if target == "local":
            return _PINNED_LOCAL
        if target == "cloud":
            return _PINNED_CLOUD
        for rule in self.rules:
            decision = rule.decide(facts)
            if decision is not None:
                return decision
        return self._default
