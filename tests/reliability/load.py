"""Clients for the scenarios: many requests at once, and a /healthz poller."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx

from tests.reliability.harness import Memory, memory_of


@dataclass
class Answer:
    """One response as the client saw it, streamed or not."""

    status: int
    headers: dict[str, str]
    #: the JSON body; for a stream, the last JSON event (an error event, or the usage chunk)
    body: dict[str, Any] | None
    #: SSE data payloads in order (streams only)
    events: list[str] = field(default_factory=list)
    #: the client-side failure, if the exchange broke (a reset, a timeout)
    failure: str | None = None

    @property
    def complete(self) -> bool:
        """A 200 with the whole answer: a JSON completion, or a stream that ends in [DONE]."""
        if self.status != 200 or self.failure is not None:
            return False
        if self.events:
            return self.events[-1] == "[DONE]" and not any('"error"' in e for e in self.events)
        return self.body is not None and bool(self.body.get("choices"))

    @property
    def text(self) -> str:
        """The generated text, streamed or not."""
        if self.events:
            parts = []
            for data in self.events:
                if data == "[DONE]":
                    continue
                for choice in json.loads(data).get("choices") or ():
                    delta = choice.get("delta")
                    parts.append((delta or {}).get("content") or choice.get("text") or "")
            return "".join(parts)
        assert self.body is not None
        choice = self.body["choices"][0]
        message = choice.get("message")
        return str(message["content"] if message else choice["text"])

    @property
    def error_code(self) -> str | None:
        error = (self.body or {}).get("error")
        return error.get("code") if isinstance(error, dict) else None


async def send(client: httpx.AsyncClient, path: str, body: dict[str, Any], **kw: Any) -> Answer:
    """POST one request; read the whole answer (SSE or JSON); never raise."""
    try:
        if body.get("stream"):
            async with client.stream("POST", path, json=body, **kw) as response:
                headers = dict(response.headers)
                if not headers.get("content-type", "").startswith("text/event-stream"):
                    raw = await response.aread()  # refused before the stream began
                    return Answer(response.status_code, headers, json.loads(raw) if raw else None)
                events: list[str] = []
                async for line in response.aiter_lines():
                    if line.startswith("data: "):
                        events.append(line[len("data: ") :])
                last = None
                for data in reversed(events):
                    if data != "[DONE]":
                        last = json.loads(data)
                        break
                return Answer(response.status_code, headers, last, events)
        response = await client.post(path, json=body, **kw)
        parsed = response.json() if response.content else None
        return Answer(response.status_code, dict(response.headers), parsed)
    except (httpx.HTTPError, ValueError) as exc:
        return Answer(0, {}, None, failure=f"{type(exc).__name__}: {exc}")


async def send_all(
    url: str,
    requests: Sequence[tuple[str, dict[str, Any]]],
    *,
    request_ids: Sequence[str] | None = None,
    timeout: float = 600.0,
) -> list[Answer]:
    """Every request at once, each on its own connection (and with its x-request-id)."""
    ids = list(request_ids) if request_ids is not None else [None] * len(requests)
    assert len(ids) == len(requests)
    limits = httpx.Limits(max_connections=len(requests) + 1, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=url, timeout=timeout, limits=limits) as client:
        return list(
            await asyncio.gather(
                *(
                    send(client, path, body, headers={"x-request-id": rid} if rid else None)
                    for (path, body), rid in zip(requests, ids, strict=True)
                )
            )
        )


def distribution(answers: Sequence[Answer]) -> dict[str, int]:
    """'200', '503 queue_full', 'failed' ... with counts, for reports and messages."""
    counts: Counter[str] = Counter()
    for answer in answers:
        if answer.failure is not None:
            counts["failed"] += 1
        elif answer.status == 200:
            counts["200"] += 1
        else:
            counts[f"{answer.status} {answer.error_code}"] += 1
    return dict(sorted(counts.items()))


class HealthPoller:
    """Polls /healthz on fresh connections while a scenario runs; samples the server's memory."""

    def __init__(self, url: str, pid: int, *, interval: float = 0.05, timeout: float = 5.0):
        self._url = url
        self._pid = pid
        self._interval = interval
        self._timeout = timeout
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="healthz-poller", daemon=True)
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.memory: list[Memory] = []

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.perf_counter()
            try:
                # A new connection each time: a stuck accept loop must show up too.
                response = httpx.get(f"{self._url}/healthz", timeout=self._timeout)
                if response.status_code != 200 or response.json() != {"status": "ok"}:
                    self.failures.append(f"{response.status_code} {response.text[:200]}")
            except httpx.HTTPError as exc:
                self.failures.append(f"{type(exc).__name__}: {exc}")
            else:
                self.latencies.append(time.perf_counter() - started)
            try:
                self.memory.append(memory_of(self._pid))
            except (OSError, KeyError) as exc:
                self.failures.append(f"no memory reading: {exc}")
            self._stop.wait(self._interval)

    def __enter__(self) -> HealthPoller:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=30)

    @property
    def max_latency_ms(self) -> float:
        return max(self.latencies) * 1000 if self.latencies else float("nan")

    @property
    def peak_rss_mib(self) -> float:
        return max(m.rss_mib for m in self.memory) if self.memory else float("nan")
