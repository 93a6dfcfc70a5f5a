"""The JSON access log: one line per completion request, on the ``gateway.access`` logger.

``hybrid-gateway serve`` gives that logger a :class:`JsonLinesHandler` on
stderr (and stops it propagating). While that handler is its only one, each
line is written straight to the stream's file descriptor, skipping the
LogRecord machinery and the text and buffer layers of the stream. With any
other set-up (handlers or filters added by an embedding application, pytest's
caplog) the line goes through :mod:`logging` as usual, as a record whose
message is the JSON.

Per request, in callgrind instructions (bench/instructions.py counts the
whole request at about 1.5M): logging's record, caller lookup and formatter
took 109K; writing the line to the stream directly 35K; the line serialised
from the record itself and written with one ``os.write``, 20K.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
from typing import TextIO

from gateway import jsonio
from gateway.ledger.record import LedgerRecord

logger = logging.getLogger("gateway.access")

#: LedgerRecord's last fields, never in the access log (the ledger keeps them, masked,
#: only with GATEWAY_LEDGER__STORE_CONTENT); as orjson writes them when they are empty
_CONTENT_TAIL = b',"prompt_text":null,"completion_text":null}'
_CONTENT_FIELDS = ("prompt_text", "completion_text")


def line(record: LedgerRecord, *, cost_usd: float, savings_usd: float) -> bytes:
    """The record's access-log line: its fields but the content ones, then the two costs.

    orjson writes the dataclass as it is, with no dict built for it (a dict of the
    30-odd fields cost as much as the rest of the line); a record that carries
    content (or whose last fields are not the content ones) takes the dict way.
    """
    try:
        data = jsonio.dumps(record)
    except TypeError:  # orjson refused it (a lone surrogate) and json cannot write a dataclass
        data = b""
    if data.endswith(_CONTENT_TAIL):
        costs = jsonio.dumps({"cost_usd": cost_usd, "savings_usd": savings_usd})
        return b"%s,%s\n" % (data[: -len(_CONTENT_TAIL)], costs[1:])
    fields = {f.name: getattr(record, f.name) for f in dataclasses.fields(record)}
    for name in _CONTENT_FIELDS:
        del fields[name]
    fields["cost_usd"] = cost_usd
    fields["savings_usd"] = savings_usd
    return jsonio.dumps(fields) + b"\n"


class JsonLinesHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler of bare messages that can also take ready lines (bytes)."""

    def __init__(self, stream: TextIO) -> None:
        super().__init__(stream)
        self.setFormatter(logging.Formatter("%(message)s"))
        #: written to directly when nothing can wait in the stream's own buffers (then
        #: lines cannot overtake what was written through the stream): sys.stderr
        self._fd: int | None = None
        if getattr(stream, "write_through", False) and isinstance(
            getattr(stream, "buffer", None), io.RawIOBase
        ):
            with contextlib.suppress(OSError, ValueError):
                self._fd = stream.fileno()

    def write_line(self, data: bytes) -> None:
        """Write one ready line (with its newline); raises what the write raises."""
        with self.lock:  # type: ignore[union-attr]
            if self._fd is None:
                self.stream.write(data.decode())
                self.flush()
                return
            written = os.write(self._fd, data)
            while written < len(data):  # a pipe or file can take part of a long line
                data = data[written:]
                written = os.write(self._fd, data)


class _Line:
    """The message of a record: decoded only if a handler formats it."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __str__(self) -> str:
        return self.data.decode().rstrip("\n")


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


def write(data: bytes) -> None:
    """Log one request's line, from :func:`line` (call only when :func:`enabled`)."""
    handlers = logger.handlers
    if len(handlers) == 1 and not logger.propagate and not logger.filters:
        handler = handlers[0]
        if (
            type(handler) is JsonLinesHandler
            and not handler.filters
            and handler.level <= logging.INFO
        ):
            try:
                handler.write_line(data)
                return
            except Exception:  # logging's own path, below, reports it
                pass
    logger.info("%s", _Line(data))
