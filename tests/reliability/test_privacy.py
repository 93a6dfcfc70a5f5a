"""The privacy floor holds when the local model fails or is full: nothing private goes out.

The gateway app runs under uvicorn on loopback with its real cloud client, the
recording upstream as its cloud, and a local engine that either fails every
generation or has a full queue (fakes: a real model cannot be made to fail on
demand). Requests that match the privacy floor of each shipped policy are sent
every way that could lead to the cloud: the routed id, the pinned cloud id, a
rule that asks for the cloud, a prompt too long for the local context,
streamed and not. The upstream must receive none of them; a control request
without private data must reach it. (Under real overload, see
test_overload.py.)
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from gateway import Settings, create_app
from local_model import GenerationRequest, QueueFullError
from local_model.generation import Generation
from local_model.types import EngineStatus
from tests.fakes import FakeEngine
from tests.integration.conftest import ServerThread
from tests.reliability.conftest import UPSTREAM_KEY, Results, Upstream
from tests.reliability.harness import policy_file
from tests.reliability.load import Answer, send_all

EMAIL = "grace.hopper@example.org"
N_CTX = 256


class FailingEngine(FakeEngine):
    """Every generation fails: before its first token, or after one."""

    def submit(self, request: GenerationRequest) -> Generation:
        self.enqueue(["Hel", "lo"], fail_after=len(self.history) % 2)
        return super().submit(request)


class FullEngine(FakeEngine):
    """The queue is full: every submission is refused."""

    def status(self) -> EngineStatus:
        return EngineStatus(
            loaded=True,
            running=1,
            waiting=self._max_waiting,
            max_waiting=self._max_waiting,
            tokens_per_second=50.0,
            seconds_per_request=2.0,
        )

    def submit(self, request: GenerationRequest) -> Generation:
        raise QueueFullError("the local model queue is full", retry_after_seconds=4)


ENGINES = {"failing": FailingEngine, "full": FullEngine}
POLICIES = ["privacy-first", "latency-first", "default"]


def _requests() -> list[tuple[str, dict[str, Any]]]:
    private = [
        ("hybrid", f"Please write to {EMAIL} about the invoice."),
        ("hybrid", f"#cloud checkme please write to {EMAIL}"),
        ("cloud", f"Write to {EMAIL} now."),
        ("hybrid", "word " * (N_CTX + 40) + EMAIL),  # too long for the local context
    ]
    requests = []
    for model, text in private:
        for stream in (False, True):
            messages = [{"role": "user", "content": text}]
            body = {"model": model, "messages": messages, "max_tokens": 4, "stream": stream}
            requests.append(("/v1/chat/completions", body))
            if model == "hybrid":
                legacy = {"model": model, "prompt": text, "max_tokens": 4, "stream": stream}
                requests.append(("/v1/completions", legacy))
    return requests


CONTROL = (
    "/v1/chat/completions",
    {"model": "cloud", "messages": [{"role": "user", "content": "What is rain?"}]},
)


@pytest.fixture(params=[(p, e) for p in POLICIES for e in ENGINES], ids=lambda v: "-".join(v))
def gateway_url(
    request: pytest.FixtureRequest, upstream: Upstream, tmp_path: Path
) -> Iterator[str]:
    policy, engine_kind = request.param
    engine = ENGINES[engine_kind](n_ctx=N_CTX)
    settings = Settings(
        policy={"file": policy_file(policy)},
        cloud={
            "base_url": f"{upstream.url}/v1",
            "model": "stand-in",
            "api_key": UPSTREAM_KEY,
            "max_attempts": 1,
        },
        ledger={"path": tmp_path / "ledger.sqlite3"},
    )
    app = create_app(settings, engine_factory=lambda _: engine)
    with ServerThread(app) as server:
        yield server.url


def _outcome(answer: Answer) -> str:
    route = answer.headers.get("x-hybrid-route", "-")
    code = answer.error_code or ("error event" if answer.status == 200 else "")
    return f"{answer.status} {route} {code}".strip()


def test_private_requests_never_reach_the_cloud_when_local_fails(
    gateway_url: str, upstream: Upstream, results: Results, request: pytest.FixtureRequest
) -> None:
    before = len(upstream.recorder.snapshot())
    answers = asyncio.run(send_all(gateway_url, _requests()))
    control = asyncio.run(send_all(gateway_url, [CONTROL]))[0]
    calls = upstream.recorder.snapshot()[before:]

    assert not [c for c in calls if EMAIL in c.text], "private text reached the cloud"
    assert control.status == 200 and control.headers["x-hybrid-route"] == "cloud"
    assert len(calls) == 1  # the control request only
    outcomes: Counter[str] = Counter()
    for answer in answers:
        assert answer.failure is None, answer.failure
        outcomes[_outcome(answer)] += 1
        # refused or failed locally, never answered by the cloud
        assert answer.headers.get("x-hybrid-route", "local") == "local"
        assert not answer.complete, answer.body
        assert answer.status in (200, 400, 500, 503)
        if answer.status == 200:  # a stream that failed after its first byte
            assert answer.events and '"error"' in answer.events[-1]
    results.record(
        f"privacy floor, {request.node.callspec.id}",
        private_requests=len(answers),
        outcomes=dict(sorted(outcomes.items())),
        private_requests_at_upstream=0,
    )
