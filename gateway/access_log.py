"""The JSON access log: one line per completion request, on the ``gateway.access`` logger.

``hybrid-gateway serve`` gives that logger a :class:`JsonLinesHandler` on
stderr (and stops it propagating). While that handler is its only one, each
line is written straight to the stream, skipping the LogRecord machinery
(about 6% of the cloud route's instructions per request went into logging's
record, caller lookup, lock and formatter). With any other set-up (handlers or
filters added by an embedding application, pytest's caplog) the line goes
through :mod:`logging` as usual, as a record whose message is the JSON.
"""

from __future__ import annotations

import logging
from typing import Any, TextIO

from gateway import jsonio

logger = logging.getLogger("gateway.access")


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler of bare messages that can also take a ready line."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(logging.Formatter("%(message)s"))

    def write_line(self, line: str) -> None:
        """Write ``line`` and the terminator, as emit would; raises what the stream raises."""
        with self.lock:  # type: ignore[union-attr]
            self.stream.write(line + self.terminator)
            self.flush()


class _Line:
    """The message of a record: dumped only if a handler formats it."""

    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, Any]) -> None:
        self.fields = fields

    def __str__(self) -> str:
        return jsonio.dumps(self.fields).decode()


def configure(enabled: bool, stream: TextIO) -> None:
    """The set-up of ``serve``: bare JSON lines on ``stream``, or no access log at all."""
    logger.propagate = False
    if not enabled:
        logger.disabled = True
        return
    # One write per line, on the event loop. A listener thread (QueueHandler) was
    # measured worse: at concurrency 16 its GIL hand-offs cost the loop 20% of
    # throughput (bench/ledger_overhead.py).
    logger.addHandler(JsonLinesHandler(stream))
    logger.setLevel(logging.INFO)


def enabled() -> bool:
    return logger.isEnabledFor(logging.INFO)


def write(fields: dict[str, Any]) -> None:
    """Log one request's line (call only when :func:`enabled`)."""
    handlers = logger.handlers
    if len(handlers) == 1 and not logger.propagate and not logger.filters:
        handler = handlers[0]
        if (
            type(handler) is JsonLinesHandler
            and not handler.filters
            and handler.level <= logging.INFO
        ):
            try:
                handler.write_line(jsonio.dumps(fields).decode())
                return
            except Exception:  # logging's own path, below, reports it
                pass
    logger.info("%s", _Line(fields))
