"""The real gateway as a separate process, and what the scenarios measure about it.

``GatewayProcess`` runs ``python -m gateway.cli serve`` (what ``hybrid-gateway
serve`` runs) on a free loopback port, with only the ``GATEWAY_*`` variables a
scenario gives it, in a scratch directory. Its output goes through a pipe to a
reader thread, not to a file, so a scenario that limits the file sizes the
gateway may write still gets every log line.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import httpx

from gateway.settings import settings_reference

T = TypeVar("T")

REPO = Path(__file__).resolve().parents[2]
POLICIES = REPO / "deploy" / "policies"
START_TIMEOUT_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(check: Callable[[], T | None], what: str, timeout: float = 60.0) -> T:
    """Poll ``check`` until it returns something other than None/False; fail after ``timeout``.

    A generous deadline that only stops a hung scenario, never a measurement.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None and value is not False:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@dataclass(frozen=True)
class Memory:
    """From /proc/<pid>/status, in MiB: resident now, and the peak since the process started."""

    rss_mib: float
    peak_mib: float


def memory_of(pid: int) -> Memory:
    fields: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(value.split()[0]) / 1024  # kB
    return Memory(rss_mib=fields["VmRSS"], peak_mib=fields["VmHWM"])


def _known(name: str) -> bool:
    return any(row[0] == name for row in settings_reference())


class GatewayProcess:
    """``hybrid-gateway serve`` in its own process; stopped with SIGTERM, killed if need be."""

    def __init__(
        self, workdir: Path, env: Mapping[str, str] | None = None, *, name: str = "gateway"
    ) -> None:
        self.workdir = workdir
        self.name = name
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.lines: list[str] = []
        self._lock = threading.Lock()
        settings = {
            "GATEWAY_LEDGER__PATH": str(workdir / "ledger.sqlite3"),
            # Smaller KV cache: less memory and a faster start; every prompt here is short.
            "GATEWAY_LOCAL__N_CTX": "1024",
            # One model thread: on a busy CI box two threads that wait for each other at every
            # step slow decoding tenfold, and the scenarios test the gateway, not the speed.
            "GATEWAY_LOCAL__N_THREADS": "1",
            "GATEWAY_LOCAL__N_THREADS_BATCH": "1",
        }
        if _known("GATEWAY_AUTH__DISABLED"):
            # Authentication scenarios are separate; these exercise everything behind it.
            settings["GATEWAY_AUTH__DISABLED"] = "true"
        settings.update(env or {})
        # Only the settings given here: nothing leaks in from the test run's environment.
        self.env = {k: v for k, v in os.environ.items() if not k.upper().startswith("GATEWAY_")}
        self.env.update(settings)
        self.ledger_path = Path(self.env["GATEWAY_LEDGER__PATH"])
        self.process: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    # --- life cycle ------------------------------------------------------------------

    def start(self) -> GatewayProcess:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "serve", "--host", "127.0.0.1"]
            + ["--port", str(self.port)],
            cwd=self.workdir,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-log", daemon=True)
        self._reader.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.process.poll() is not None:
                raise AssertionError(f"{self.name} exited at start-up:\n{self.log()}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{self.url}/readyz", timeout=5).status_code == 200:
                    return self
            if time.monotonic() > deadline:
                raise AssertionError(
                    f"{self.name} not ready after {START_TIMEOUT_S} s:\n{self.log()}"
                )
            time.sleep(0.1)

    def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        with self.process.stdout as output, open(self.workdir / f"{self.name}.log", "wb") as copy:
            for raw in output:
                copy.write(raw)
                copy.flush()
                with self._lock:
                    self.lines.append(raw.decode("utf-8", errors="replace"))

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        assert self.process is not None
        self.process.send_signal(signum)

    def wait(self, timeout: float) -> int:
        assert self.process is not None
        code = self.process.wait(timeout=timeout)
        if self._reader is not None:
            self._reader.join(timeout=10)
        return code

    def stop(self, timeout: float = 60.0) -> int | None:
        """SIGTERM and wait; kill if it does not exit in time. The exit code, or None."""
        if self.process is None:
            return None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                return self.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.wait(30)
                return None
        return self.wait(30)

    def __enter__(self) -> GatewayProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- observations ----------------------------------------------------------------

    def log(self) -> str:
        with self._lock:
            return "".join(self.lines)

    def log_has(self, text: str) -> bool:
        with self._lock:
            return any(text in line for line in self.lines)

    def memory(self) -> Memory:
        return memory_of(self.pid)

    def engine_status(self) -> dict[str, Any]:
        local: dict[str, Any] = httpx.get(f"{self.url}/readyz", timeout=10).json()["local"]
        return local

    def wait_idle(self, timeout: float = 120.0) -> None:
        def idle() -> bool:
            status = self.engine_status()
            return status["running"] == 0 and status["waiting"] == 0

        wait_for(idle, f"{self.name}'s local model to go idle", timeout)

    def ledger_rows(self) -> list[dict[str, Any]]:
        return ledger_rows(self.ledger_path)


def ledger_rows(path: Path) -> list[dict[str, Any]]:
    """Every record in a SQLite ledger, oldest first (read-only: never creates the file)."""
    if not path.exists():
        return []
    connection = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=10)
    try:
        connection.row_factory = sqlite3.Row
        tables = connection.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        if "records" not in {row["name"] for row in tables}:
            return []
        rows = connection.execute("SELECT * FROM records ORDER BY id").fetchall()
        return [dict(row) for row in rows]
    finally:
        connection.close()


def policy_file(name: str) -> str:
    path = POLICIES / f"{name}.yaml"
    assert path.is_file(), path
    return str(path)
