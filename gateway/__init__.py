"""HTTP edge of the hybrid gateway: OpenAI-compatible API over the local model."""

from gateway.app import create_app
from gateway.settings import Settings

__all__ = ["Settings", "create_app"]
