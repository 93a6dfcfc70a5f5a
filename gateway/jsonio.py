"""JSON on the hot paths: orjson, with the standard library where orjson refuses.

Per request the gateway parses the upstream's answer, writes the client's
body (or one SSE event per chunk) and an access-log line. With ``json`` the
access-log line alone took 12 us of the event loop; orjson takes about 1 us.
orjson is stricter in two ways that must not turn into errors here: it
refuses integers beyond 64 bits and non-string keys when writing, and NaN or
Infinity literals when reading; those cases fall back to ``json``. It writes
NaN and infinities as null (``json`` writes invalid JSON, and Starlette's
JSONResponse refuses them with a 500). It also refuses a str holding a lone
surrogate (``json`` decodes one from a ``\\ud800`` escape), which UTF-8 cannot
encode either: that value is written with ``\\u`` escapes, as JSON allows.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from fastapi.responses import JSONResponse


def dumps(value: Any) -> bytes:
    """Compact UTF-8 JSON (ASCII with escapes when a str is not valid UTF-8)."""
    try:
        return orjson.dumps(value)
    except TypeError:
        pass
    try:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
    except UnicodeEncodeError:  # a lone surrogate
        return json.dumps(value, separators=(",", ":")).encode()


def loads(data: bytes | str) -> Any:
    """Parse JSON; ValueError (json.JSONDecodeError) when it is not JSON."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)  # NaN, Infinity: accepted as json accepts them, or the error


class JSONBody(JSONResponse):
    """Starlette's JSONResponse, rendered by :func:`dumps`."""

    def render(self, content: Any) -> bytes:
        return dumps(content)
