"""Getting every item answered, locally and by the cloud, at most once.

Answers are cached in ``cache.jsonl`` in the output directory, one JSON line
per answer, so an interrupted run resumes where it stopped and ``eval`` and
``calibrate`` on the same directory share their answers. A local answer is
keyed by item id, a hash of the item's prompt (an edited item is answered
again), model file and max tokens; a cloud answer by the same plus the cloud's
base URL and model instead of the model file. A local line written before the
cache stored per-token entropies has no ``entropies`` field: that item is
answered again (the new line supersedes it), so every answer of a run carries
the same features.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TextIO

from gateway.eval.dataset import EvalItem


@dataclass(frozen=True)
class LocalAnswer:
    """What the local model said for one item."""

    text: str
    #: natural-log probability of each generated token
    logprobs: tuple[float, ...]
    prompt_tokens: int
    #: wall time of the generation: prompt processing and decoding
    seconds: float
    #: entropy (nats) of the next-token distribution at each generated token; None
    #: when the engine does not report it
    entropies: tuple[float, ...] | None = None


@dataclass(frozen=True)
class CloudAnswer:
    """What the cloud said for one item."""

    text: str
    #: the cloud's own counts; None when it reported no usage
    prompt_tokens: int | None
    completion_tokens: int | None
    #: wall time of the call, retries included
    seconds: float


@dataclass(frozen=True)
class Answered:
    item: EvalItem
    local: LocalAnswer
    #: None when no cloud is configured (the gold answer stands in)
    cloud: CloudAnswer | None


AnswerLocally = Callable[[EvalItem], Awaitable[LocalAnswer]]
AskCloud = Callable[[EvalItem], Awaitable[CloudAnswer]]


def prompt_digest(item: EvalItem) -> str:
    """A short hash of what the model is asked."""
    payload = json.dumps([item.prompt, item.chat_messages() if item.messages else None])
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


class AnswerCache:
    """Answers by key, read once from a JSON Lines file and appended to as they come."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._rows: dict[str, dict[str, Any]] = {}
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        # A torn last line must not swallow the first line appended after it.
        self._torn = bool(text) and not text.endswith("\n")
        if text:
            for line in text.splitlines():
                try:
                    row = json.loads(line)
                    self._rows[row["key"]] = row["answer"]
                except (ValueError, KeyError, TypeError):
                    # A run killed mid-write leaves a torn last line (and a cache of the
                    # first version has no "key"): those items are simply answered again.
                    continue

    def local(self, key: str) -> LocalAnswer | None:
        row = self._rows.get(key)
        if row is None:
            return None
        try:
            # A KeyError here (an old line without "entropies") means: answer it again.
            entropies = row["entropies"]
            answer = LocalAnswer(
                text=str(row["text"]),
                logprobs=tuple(float(x) for x in row["logprobs"]),
                prompt_tokens=int(row["prompt_tokens"]),
                seconds=float(row["seconds"]),
                entropies=None if entropies is None else tuple(float(x) for x in entropies),
            )
        except (ValueError, KeyError, TypeError):
            return None
        if answer.entropies is not None and len(answer.entropies) != len(answer.logprobs):
            return None
        return answer

    def cloud(self, key: str) -> CloudAnswer | None:
        row = self._rows.get(key)
        if row is None:
            return None
        try:
            prompt, completion = row["prompt_tokens"], row["completion_tokens"]
            return CloudAnswer(
                text=str(row["text"]),
                prompt_tokens=None if prompt is None else int(prompt),
                completion_tokens=None if completion is None else int(completion),
                seconds=float(row["seconds"]),
            )
        except (ValueError, KeyError, TypeError):
            return None

    def put(self, key: str, answer: LocalAnswer | CloudAnswer) -> None:
        row = asdict(answer)
        self._rows[key] = row
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as sink:
            if self._torn:
                sink.write("\n")
                self._torn = False
            sink.write(json.dumps({"key": key, "answer": row}) + "\n")


def local_key(item: EvalItem, *, model: str, max_tokens: int) -> str:
    return json.dumps(["local", item.id, prompt_digest(item), model, max_tokens])


def cloud_key(item: EvalItem, *, cloud: str, max_tokens: int) -> str:
    return json.dumps(["cloud", item.id, prompt_digest(item), cloud, max_tokens])


class Progress:
    """A one-line progress bar on a text stream: done/total, a bar, time per answer."""

    def __init__(self, stream: TextIO | None, total: int, width: int = 30) -> None:
        self._stream = stream
        self._total = total
        self._width = width
        self._started = time.monotonic()
        self._answered = 0

    def update(self, done: int, *, answered: bool) -> None:
        if answered:
            self._answered += 1
        if self._stream is None:
            return
        filled = round(self._width * done / self._total) if self._total else self._width
        bar = "#" * filled + "." * (self._width - filled)
        rate = ""
        if self._answered:
            rate = f"  {(time.monotonic() - self._started) / self._answered:.1f} s/item"
        self._stream.write(f"\r[{bar}] {done}/{self._total}{rate}")
        self._stream.flush()

    def close(self) -> None:
        if self._stream is not None:
            self._stream.write("\n")
            self._stream.flush()


async def answer_all(
    items: Sequence[EvalItem],
    answer_locally: AnswerLocally,
    ask_cloud: AskCloud | None,
    *,
    cache: AnswerCache,
    model: str,
    cloud: str | None,
    max_tokens: int,
    progress: TextIO | None = None,
) -> list[Answered]:
    """Every item answered locally, and by the cloud when ``ask_cloud`` is given
    (``cloud`` names it in the cache key), from the cache when present.

    Items are answered one at a time, in order: the local model runs one
    generation at a time anyway, and sequential cloud calls keep the measured
    latencies free of our own queueing. A failure propagates; what was answered
    before it stays cached.
    """
    if (ask_cloud is None) != (cloud is None):
        raise ValueError("ask_cloud and cloud go together")
    bar = Progress(progress, len(items))
    answered: list[Answered] = []
    try:
        for done, item in enumerate(items, start=1):
            fresh = False
            key = local_key(item, model=model, max_tokens=max_tokens)
            local = cache.local(key)
            if local is None:
                local = await answer_locally(item)
                cache.put(key, local)
                fresh = True
            remote: CloudAnswer | None = None
            if ask_cloud is not None and cloud is not None:
                key = cloud_key(item, cloud=cloud, max_tokens=max_tokens)
                remote = cache.cloud(key)
                if remote is None:
                    remote = await ask_cloud(item)
                    cache.put(key, remote)
                    fresh = True
            answered.append(Answered(item, local, remote))
            bar.update(done, answered=fresh)
    finally:
        bar.close()
    return answered
