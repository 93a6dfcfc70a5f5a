"""The ledger's database fails under a running gateway: it keeps serving and loses nothing.

Each fault is injected into a real ``hybrid-gateway serve`` process while it
answers requests, then repaired. Requests must be answered (200) throughout;
the gateway must notice the failure (its log says so: otherwise the fault was
not a fault); and after the repair the database must hold exactly one record
per request answered since the fault began.

* locked: another connection holds SQLite's write lock (``BEGIN EXCLUSIVE``)
  for longer than the gateway's busy timeout
* directory removed: the ledger's directory (file, WAL and all) is deleted, then
  created again empty
* disk full: the gateway may not write past the first byte of any file
  (``RLIMIT_FSIZE`` lowered from outside with prlimit), then the limit is restored

File permissions are not among them: the suite runs as root on our CI, and root
writes through them.
"""

from __future__ import annotations

import resource
import shutil
import sqlite3
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.reliability.conftest import Results
from tests.reliability.harness import GatewayProcess, ledger_rows, wait_for

pytestmark = pytest.mark.model

PER_PHASE = 4
FAILED_WRITE = "ledger: writing"  # the writer's warning when a batch could not be stored


def _serve(gateway: GatewayProcess, tag: str) -> list[str]:
    """PER_PHASE quick requests, each answered 200; their request ids."""
    ids = [f"{tag}-{i}" for i in range(PER_PHASE)]
    body = {"model": "local", "prompt": "1, 2, 3,", "max_tokens": 1, "temperature": 0}
    with httpx.Client(base_url=gateway.url, timeout=120) as client:
        for request_id in ids:
            answer = client.post("/v1/completions", json=body, headers={"x-request-id": request_id})
            assert answer.status_code == 200, answer.text
    return ids


def _metric(gateway: GatewayProcess, name: str) -> float:
    text = httpx.get(f"{gateway.url}/metrics", timeout=30).text
    for line in text.splitlines():
        if line.split(" ")[0].endswith(name):
            return float(line.split(" ")[1])
    raise AssertionError(f"no metric {name}")


@dataclass
class Fault:
    name: str
    inject: Callable[[GatewayProcess], Callable[[], None]]
    #: whether the records written before the fault survive it
    keeps_earlier: bool = True


def _hold_the_write_lock(gateway: GatewayProcess) -> Callable[[], None]:
    holder = sqlite3.connect(gateway.ledger_path, timeout=60, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")

    def release() -> None:
        holder.execute("ROLLBACK")
        holder.close()

    return release


def _remove_the_directory(gateway: GatewayProcess) -> Callable[[], None]:
    directory = gateway.ledger_path.parent
    shutil.rmtree(directory)
    return lambda: directory.mkdir()


def _fill_the_disk(gateway: GatewayProcess) -> Callable[[], None]:
    before = resource.prlimit(gateway.pid, resource.RLIMIT_FSIZE)
    resource.prlimit(gateway.pid, resource.RLIMIT_FSIZE, (1, before[1]))
    return lambda: resource.prlimit(gateway.pid, resource.RLIMIT_FSIZE, before)


FAULTS = [
    Fault("locked", _hold_the_write_lock),
    Fault("directory removed", _remove_the_directory, keeps_earlier=False),
    Fault("disk full", _fill_the_disk),
]


@pytest.mark.parametrize("fault", FAULTS, ids=[f.name for f in FAULTS])
def test_ledger_failure_keeps_serving_and_loses_no_record(
    fault: Fault, tmp_path: Path, results: Results
) -> None:
    ledger = tmp_path / "ledger" / "ledger.sqlite3"
    ledger.parent.mkdir()
    env = {"GATEWAY_LEDGER__PATH": str(ledger)}
    run = uuid.uuid4().hex[:6]
    with GatewayProcess(tmp_path, env, name="ledger-fault") as gateway:
        earlier = _serve(gateway, f"before-{run}")
        wait_for(lambda: len(ledger_rows(ledger)) == PER_PHASE, "the first records")

        repair = fault.inject(gateway)
        injected = time.monotonic()
        try:
            during = _serve(gateway, f"during-{run}")
            wait_for(lambda: gateway.log_has(FAILED_WRITE), "a failed ledger write", timeout=60)
            # (a batch being retried is not counted: this may read 0 under a lock)
            queued = _metric(gateway, "ledger_queue_depth")
            assert httpx.get(f"{gateway.url}/readyz", timeout=30).status_code == 200
        finally:
            repair()
        repaired = time.monotonic()
        later = _serve(gateway, f"after-{run}")

        expected = (earlier if fault.keeps_earlier else []) + during + later

        def all_written() -> list[str] | None:
            ids = [row["request_id"] for row in ledger_rows(ledger)]
            return ids if len(ids) >= len(expected) else None

        written = wait_for(all_written, "every record after the repair", timeout=120)
        recovered = time.monotonic()
        dropped = _metric(gateway, "ledger_dropped_records_total")

    assert sorted(written) == sorted(expected)
    assert dropped == 0
    results.record(
        f"ledger fault: {fault.name}",
        requests_during_fault=len(during),
        all_answered_200=True,
        records_queued_during_fault=int(queued),
        fault_s=round(repaired - injected, 1),
        written_after_repair_s=round(recovered - repaired, 1),
        records_expected=len(expected),
        records_found=len(written),
        dropped=int(dropped),
    )
