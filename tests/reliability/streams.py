"""Streams read on their own threads, so a scenario can act while they are in flight."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

import httpx


class BackgroundStream:
    """One SSE request read to its end (or until ``close_after`` events) on a thread."""

    def __init__(
        self,
        url: str,
        path: str,
        body: dict[str, Any],
        *,
        request_id: str,
        close_after: int | None = None,
    ) -> None:
        self.url = url
        self.path = path
        self.body = {**body, "stream": True}
        self.request_id = request_id
        self.close_after = close_after
        self.status: int | None = None
        self.events: list[str] = []
        self.failure: str | None = None
        self.first_event = threading.Event()
        self.finished = threading.Event()
        #: set it and the client closes the connection at the next event it receives
        self.leave = threading.Event()
        #: time.monotonic() / time.time() when the client closed the connection early
        self.closed_at: float | None = None
        self.closed_at_wall: float | None = None
        self._thread = threading.Thread(target=self._run, name=f"stream-{request_id}", daemon=True)

    def start(self) -> BackgroundStream:
        self._thread.start()
        return self

    def _run(self) -> None:
        try:
            with httpx.Client(base_url=self.url, timeout=300) as client:
                headers = {"x-request-id": self.request_id}
                with client.stream("POST", self.path, json=self.body, headers=headers) as response:
                    self.status = response.status_code
                    for line in response.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        self.events.append(line[len("data: ") :])
                        self.first_event.set()
                        enough = self.close_after is not None and self.tokens >= self.close_after
                        if enough or self.leave.is_set():
                            self.closed_at = time.monotonic()
                            self.closed_at_wall = time.time()
                            break
        except httpx.HTTPError as exc:
            self.failure = f"{type(exc).__name__}: {exc}"
        finally:
            self.first_event.set()
            self.finished.set()

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"stream {self.request_id} still running"

    @property
    def done(self) -> bool:
        """The stream ended with [DONE] and carried no error event."""
        return (
            self.failure is None
            and bool(self.events)
            and self.events[-1] == "[DONE]"
            and not any('"error"' in e for e in self.events)
        )

    @property
    def tokens(self) -> int:
        """Events that carry generated text (one token each on the local route)."""
        return sum(1 for e in self.events if _text_of(e))

    @property
    def text(self) -> str:
        return "".join(_text_of(e) for e in self.events)


def _text_of(data: str) -> str:
    if data == "[DONE]":
        return ""
    parts = []
    for choice in json.loads(data).get("choices") or ():
        delta = choice.get("delta") or {}
        parts.append(delta.get("content") or choice.get("text") or "")
    return "".join(parts)
