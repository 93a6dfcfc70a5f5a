"""Routing decisions only: pure code, no FastAPI, no network.

So far the router knows the model ids a client may ask for. Policy files,
rules and the confidence gate build on :class:`Decision`.
"""

from router.catalog import ModelCatalog
from router.decision import Decision, Route

__all__ = ["Decision", "ModelCatalog", "Route"]
