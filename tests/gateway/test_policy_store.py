"""Hot reload of the routing policy."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from gateway.policy_store import PolicyStore
from router import PolicyError, default_policy

GOOD = "version: 1\ndefault: {route}\n"


def _write(path: Path, text: str) -> None:
    path.write_text(text)
    # make the change visible even on filesystems with coarse timestamps
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))


def test_no_file_means_the_built_in_default() -> None:
    store = PolicyStore(None)
    assert store.current == default_policy()
    assert not store.changed()
    assert store.reload() is False


def test_a_bad_file_at_start_up_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("version: 1\nrules: [{name: x}]\n")
    with pytest.raises(PolicyError, match="p.yaml"):
        PolicyStore(path)


def test_reload_swaps_and_a_broken_file_keeps_the_old(tmp_path: Path, caplog) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.format(route="local"))
    store = PolicyStore(path)
    assert store.current.default == "local"

    _write(path, GOOD.format(route="cloud"))
    assert store.changed()
    assert store.reload() is True
    assert store.current.default == "cloud"
    assert not store.changed()

    _write(path, "version: 1\ndefault: sideways\n")
    assert store.reload() is False
    assert store.current.default == "cloud"
    assert (store.reloads, store.failed_reloads) == (1, 1)
    assert "keeping the previous policy" in caplog.text
    assert "default" in caplog.text


async def test_watch_picks_up_an_edit(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.format(route="local"))
    store = PolicyStore(path)
    watcher = asyncio.create_task(store.watch(0.01))
    try:
        _write(path, GOOD.format(route="cloud"))
        for _ in range(500):
            if store.current.default == "cloud":
                break
            await asyncio.sleep(0.01)
        assert store.current.default == "cloud"
    finally:
        watcher.cancel()


async def test_sighup_reloads(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(GOOD.format(route="local"))
    store = PolicyStore(path)
    loop = asyncio.get_running_loop()
    assert store.install_sighup(loop)
    try:
        path.write_text(GOOD.format(route="cloud"))  # no mtime trick: SIGHUP forces it
        os.kill(os.getpid(), signal.SIGHUP)
        for _ in range(500):
            if store.current.default == "cloud":
                break
            await asyncio.sleep(0.01)
        assert store.current.default == "cloud"
    finally:
        store.remove_sighup(loop)
