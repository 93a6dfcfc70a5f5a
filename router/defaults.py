"""The policy used when none is configured: deploy/policies/default.yaml, in code.

A test checks that the two are equal, so the file can serve as its
documentation and as the starting point for an operator's own policy.
"""

from __future__ import annotations

from router.policy import Policy

_DEFAULT: dict[str, object] = {
    "version": 1,
    "models": {"routed": "hybrid", "local": "local", "cloud": "cloud", "aliases": {}},
    "privacy": {
        "detectors": ["email", "phone", "credit_card"],
        "keywords": {},
        "patterns": {},
        "scope": "all",
    },
    "rules": [
        {
            "name": "local-overloaded",
            "route": "cloud",
            "match": {"local_wait_over_seconds": 5.0},
        },
        {
            "name": "long-prompt",
            "route": "cloud",
            "match": {"prompt_tokens_over": 1500},
        },
        {
            "name": "long-answer",
            "route": "cloud",
            "match": {"max_tokens_over": 1024},
        },
        {
            "name": "reasoning",
            "route": "cloud",
            "match": {
                "keywords": [
                    "step by step",
                    "explain why",
                    "prove",
                    "proof",
                    "derive",
                    "solve",
                    "calculate",
                    "equation",
                    "integral",
                    "derivative",
                ],
                "scope": "last_user",
            },
        },
        {
            "name": "code",
            "route": "cloud",
            "match": {
                "regex": r"(?-i:```|def \w+\(|function\s*\w*\s*\(|#include\b)",
                "scope": "last_user",
            },
        },
        {
            "name": "code-topic",
            "route": "cloud",
            "match": {
                "keywords": [
                    "python",
                    "javascript",
                    "typescript",
                    "golang",
                    "c++",
                    "sql",
                    "regex",
                    "write a function",
                    "write a script",
                    "write code",
                    "debug",
                ],
                "scope": "last_user",
            },
        },
    ],
    "default": "local_then_check",
    "gate": {
        "signal": "min",
        "threshold": -3.0,
        "quantile": 0.1,
        "first_k": 8,
        "logistic": None,
        "holdback_tokens": 16,
        "hard_floor": None,
    },
    "on_cloud_unavailable": "degrade",
}


def default_policy() -> Policy:
    """A fresh copy of the built-in policy."""
    return Policy.model_validate(_DEFAULT)
