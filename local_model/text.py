"""Turning token pieces into client text: UTF-8 reassembly and stop strings."""

from __future__ import annotations

import codecs
from collections.abc import Sequence


class Utf8Assembler:
    """Decodes byte pieces whose boundaries may split a UTF-8 character."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    def feed(self, piece: bytes) -> str:
        return self._decoder.decode(piece)

    def flush(self) -> str:
        return self._decoder.decode(b"", final=True)


class StopMatcher:
    """Finds stop strings in streamed text, holding back possible prefixes.

    ``feed`` returns the text that can safely be released and whether a stop
    string was found (the stop string and anything after it are dropped).
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self._stops = tuple(s for s in stops if s)
        self._held = ""

    def feed(self, text: str) -> tuple[str, bool]:
        if not self._stops:
            return text, False
        buffer = self._held + text
        positions = [i for i in (buffer.find(s) for s in self._stops) if i >= 0]
        if positions:
            self._held = ""
            return buffer[: min(positions)], True
        hold = self._longest_partial_stop(buffer)
        cut = len(buffer) - hold
        self._held = buffer[cut:]
        return buffer[:cut], False

    def flush(self) -> str:
        held, self._held = self._held, ""
        return held

    def _longest_partial_stop(self, buffer: str) -> int:
        longest = 0
        for stop in self._stops:
            for size in range(min(len(stop) - 1, len(buffer)), longest, -1):
                if buffer.endswith(stop[:size]):
                    longest = size
                    break
        return longest
