from __future__ import annotations

from router import Decision, ModelCatalog


def test_local_only_catalog() -> None:
    catalog = ModelCatalog(routed_id="hybrid", local_id="local")
    assert catalog.ids() == ["hybrid", "local"]
    assert catalog.decide("local") == Decision("local", "model-pinned-local")
    assert catalog.decide("hybrid") == Decision("local", "local-only")
    assert catalog.decide("cloud") is None
    assert catalog.decide("gpt-4o") is None


def test_cloud_id_pins_the_cloud_when_configured() -> None:
    catalog = ModelCatalog(routed_id="hybrid", local_id="local", cloud_id="cloud")
    assert catalog.ids() == ["hybrid", "local", "cloud"]
    assert catalog.decide("cloud") == Decision("cloud", "model-pinned-cloud")
