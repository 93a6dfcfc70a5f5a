"""The routing policy in force, swapped atomically when its file changes.

Reload triggers: the file's modification time or size changes (polled), or
SIGHUP. A broken new file keeps the old policy in force and logs why.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from pathlib import Path

from router import Policy, PolicyError, default_policy, load_policy

logger = logging.getLogger(__name__)


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


class PolicyStore:
    def __init__(self, path: Path | None) -> None:
        """Load the policy at ``path`` (or the built-in default); raise PolicyError if bad."""
        self.path = path
        self._stamp = _stamp(path) if path is not None else None
        self._policy = load_policy(path) if path is not None else default_policy()
        self.reloads = 0
        self.failed_reloads = 0

    @property
    def current(self) -> Policy:
        return self._policy

    def reload(self) -> bool:
        """Re-read the file; keep the current policy if the new one is invalid."""
        try:
            return self.reload_or_raise() is not None
        except PolicyError:
            return False

    def reload_or_raise(self) -> Policy | None:
        """Re-read the file now (None without one); PolicyError, old policy kept, if invalid."""
        if self.path is None:
            return None
        self._stamp = _stamp(self.path)
        try:
            policy = load_policy(self.path)
        except PolicyError as exc:
            self.failed_reloads += 1
            logger.error("policy reload failed, keeping the previous policy:\n%s", exc)
            raise
        self._policy = policy  # one reference swap: requests see old or new, never a mix
        self.reloads += 1
        logger.info("policy reloaded from %s", self.path)
        return policy

    def changed(self) -> bool:
        return self.path is not None and _stamp(self.path) != self._stamp

    async def watch(self, interval: float) -> None:
        """Poll the file until cancelled (works on any filesystem, bind mounts included)."""
        while True:
            await asyncio.sleep(interval)
            if self.changed():
                self.reload()

    def install_sighup(self, loop: asyncio.AbstractEventLoop) -> bool:
        """Reload on SIGHUP; only possible from the main thread, on POSIX."""
        if threading.current_thread() is not threading.main_thread() or os.name != "posix":
            return False
        loop.add_signal_handler(signal.SIGHUP, self.reload)
        return True

    def remove_sighup(self, loop: asyncio.AbstractEventLoop) -> None:
        if threading.current_thread() is threading.main_thread() and os.name == "posix":
            loop.remove_signal_handler(signal.SIGHUP)
