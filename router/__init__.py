"""Routing decisions only: pure code, no FastAPI, no network.

A :class:`Policy` (read from YAML by :func:`load_policy`) decides before
generation where a request goes (:meth:`Policy.decide`), and its
:class:`GatePolicy` judges a local answer afterwards (:meth:`GatePolicy.judge`).
The only I/O is reading the policy file.
"""

from router.decision import Decision, Route
from router.defaults import default_policy
from router.errors import PolicyError, PolicyProblem
from router.facts import Message, PromptSize, RequestFacts, Scope
from router.gate import (
    GatePolicy,
    GateVerdict,
    LogisticGate,
    confidence_signals,
    interpolated_quantile,
)
from router.loading import load_policy, parse_policy
from router.policy import ModelIds, Policy, Target
from router.privacy import PrivacyPolicy
from router.rules import Rule, RuleMatch

__all__ = [
    "Decision",
    "GatePolicy",
    "GateVerdict",
    "LogisticGate",
    "Message",
    "ModelIds",
    "Policy",
    "PolicyError",
    "PolicyProblem",
    "PrivacyPolicy",
    "PromptSize",
    "RequestFacts",
    "Route",
    "Rule",
    "RuleMatch",
    "Scope",
    "Target",
    "confidence_signals",
    "default_policy",
    "interpolated_quantile",
    "load_policy",
    "parse_policy",
]
