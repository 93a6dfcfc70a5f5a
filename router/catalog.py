"""The model ids a client may ask for, and what each one pins."""

from __future__ import annotations

from dataclasses import dataclass

from router.decision import Decision


@dataclass(frozen=True)
class ModelCatalog:
    #: the routed id: the gateway decides where the request goes
    routed_id: str
    #: pins the request to the local model
    local_id: str
    cloud_id: str | None = None

    def ids(self) -> list[str]:
        ids = [self.routed_id, self.local_id]
        if self.cloud_id is not None:
            ids.append(self.cloud_id)
        return ids

    def decide(self, requested: str) -> Decision | None:
        """The decision a model id implies, or None when the id is unknown.

        Without a cloud endpoint, the routed id has only one place to go.
        """
        if requested == self.local_id:
            return Decision("local", "model-pinned-local")
        if self.cloud_id is not None and requested == self.cloud_id:
            return Decision("cloud", "model-pinned-cloud")
        if requested == self.routed_id:
            return Decision("local", "local-only")
        return None
