from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from fastapi import FastAPI

from gateway import Settings, create_app
from gateway.app import load_llama_engine
from tests.fakes import RecordingEngine


class ServerThread:
    """A real uvicorn server on a free loopback port, in a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind(("127.0.0.1", 0))
        self.port: int = self._socket.getsockname()[1]
        self.server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))
        self._thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self._socket]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self._thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the gateway did not start")
            time.sleep(0.05)
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self._thread.join(timeout=60)
        self._socket.close()


@dataclass
class LiveGateway:
    url: str
    engine: RecordingEngine


@pytest.fixture(scope="session")
def live_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    """The real gateway with the real bundled model, under uvicorn."""
    ledger = tmp_path_factory.mktemp("ledger") / "ledger.sqlite3"
    settings = Settings(local={"n_ctx": 2048, "max_waiting": 8}, ledger={"path": ledger})
    engines: list[RecordingEngine] = []

    def factory(s: Settings) -> RecordingEngine:
        engines.append(RecordingEngine(load_llama_engine(s)))
        return engines[-1]

    with ServerThread(create_app(settings, engine_factory=factory)) as server:
        yield LiveGateway(server.url, engines[0])
