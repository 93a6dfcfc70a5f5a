"""Shared pieces of the reliability suite: gateway processes, the recording upstream, results.

Every scenario's numbers go into one JSON file at the end of the run
(``reliability-results.json`` in pytest's base temporary directory, or the path in
``RELIABILITY_RESULTS``) and are printed as a summary: docs/reliability.md quotes them.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import ServerThread
from tests.reliability.harness import GatewayProcess, policy_file
from tests.reliability.upstream import RecordingUpstream

# Stands in for a real upstream key: it must never surface anywhere but the upstream's
# Authorization header.
UPSTREAM_KEY = "sk-upstream-canary-5b1d9e7f3a2c4e68"


class Results:
    """Measured numbers by scenario, written out when the session ends."""

    def __init__(self) -> None:
        self.scenarios: dict[str, dict[str, Any]] = {}
        self.path: Path | None = None

    def record(self, scenario: str, **numbers: Any) -> None:
        self.scenarios.setdefault(scenario, {}).update(numbers)


_RESULTS = pytest.StashKey[Results]()


@pytest.fixture(scope="session")
def results(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Results]:
    collected = request.config.stash.setdefault(_RESULTS, Results())
    yield collected
    if collected.scenarios:
        target = Path(
            os.environ.get("RELIABILITY_RESULTS")
            or tmp_path_factory.getbasetemp() / "reliability-results.json"
        )
        target.write_text(json.dumps(collected.scenarios, indent=2, sort_keys=True) + "\n")
        collected.path = target


def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    collected = config.stash.get(_RESULTS, None)
    if collected is None or not collected.scenarios:
        return
    terminalreporter.section("reliability results")
    if collected.path is not None:
        terminalreporter.write_line(f"(also in {collected.path})")
    for scenario, numbers in sorted(collected.scenarios.items()):
        terminalreporter.write_line(f"{scenario}: {json.dumps(numbers, sort_keys=True)}")


@dataclass
class Upstream:
    url: str
    recorder: RecordingUpstream


@pytest.fixture(scope="session")
def upstream() -> Iterator[Upstream]:
    """The recording OpenAI-compatible stand-in for the cloud, on loopback."""
    recorder = RecordingUpstream()
    with ServerThread(recorder) as server:
        yield Upstream(server.url, recorder)


@pytest.fixture(scope="session")
def local_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    """``hybrid-gateway serve`` as shipped: built-in policy, no cloud, default queue."""
    with GatewayProcess(tmp_path_factory.mktemp("local-gateway"), name="local") as process:
        yield process


@pytest.fixture(scope="session")
def hybrid_gateway(
    tmp_path_factory: pytest.TempPathFactory, upstream: Upstream
) -> Iterator[GatewayProcess]:
    """The latency-first policy with the recording upstream as its cloud."""
    env = {
        "GATEWAY_POLICY__FILE": policy_file("latency-first"),
        "GATEWAY_CLOUD__BASE_URL": f"{upstream.url}/v1",
        "GATEWAY_CLOUD__MODEL": "stand-in",
        "GATEWAY_CLOUD__API_KEY": UPSTREAM_KEY,
    }
    workdir = tmp_path_factory.mktemp("hybrid-gateway")
    with GatewayProcess(workdir, env, name="hybrid") as process:
        yield process
