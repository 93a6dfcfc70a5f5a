"""router/ stays pure: importing it pulls in no web framework, HTTP client or engine."""

from __future__ import annotations

import subprocess
import sys

FORBIDDEN = ("fastapi", "starlette", "httpx", "uvicorn", "gateway", "local_model", "llama_cpp")


def test_router_imports_nothing_impure() -> None:
    code = (
        "import sys, router\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
