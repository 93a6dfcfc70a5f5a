"""The ledger's writer: records leave the request path at once and reach the store in batches.

``Ledger.record`` only prices the record and appends it to an in-memory
queue, so serving never waits on (or fails because of) the database. A
background task writes the queue in batches, in order. When the store fails
(locked, unavailable, disk full) the batch goes back to the front of the queue
and the task retries with exponential backoff; once the store works again
everything queued is written in the original order. A batch refused for its
data (a value the store cannot encode: no retry would help) is written again
one row at a time, and only the rows refused are dropped.

Nothing is lost silently: a record that cannot be queued (queue full, costing
failed, ledger closed), an oldest record pushed out while the store is down,
and whatever is still queued when the shutdown flush gives up are all counted
in ``dropped`` and logged. Repeated log lines are rate-limited; each carries
the running totals, so the suppressed ones hide no numbers.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable

from gateway.ledger.cost import Costs, price_costs
from gateway.ledger.record import LedgerRecord
from gateway.ledger.store import LedgerStore, StoredRecord
from gateway.settings import LedgerSettings

logger = logging.getLogger(__name__)

# What a store raises for a row it cannot take (a str no encoding can carry, an integer
# beyond 64 bits, a constraint: LedgerDataError is a ValueError), as opposed to being
# unavailable (LedgerStoreError, OSError): retrying such a batch can never succeed.
_DATA_ERRORS = (ValueError, TypeError, OverflowError)


class _Throttle:
    """Lets one log line per key through every ``interval_s``; counts the rest."""

    def __init__(self, interval_s: float, clock: Callable[[], float]) -> None:
        self._interval_s = interval_s
        self._clock = clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def log(
        self, key: str, level: int, message: str, *args: object, exc_info: bool = False
    ) -> None:
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._interval_s:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1
            return
        self._last[key] = now
        suppressed = self._suppressed.pop(key, 0)
        if suppressed:
            message += " (%d similar message(s) suppressed)"
            args = (*args, suppressed)
        logger.log(level, message, *args, exc_info=exc_info)


class Ledger:
    def __init__(
        self,
        store: LedgerStore,
        settings: LedgerSettings,
        *,
        cloud_model: str,
        clock: Callable[[], float] = time.monotonic,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 30.0,
        close_timeout_s: float = 10.0,
        log_interval_s: float = 10.0,
    ) -> None:
        #: public so that readers (the usage endpoint) query what the writer wrote
        self.store = store
        self._settings = settings
        self._cloud_model = cloud_model
        self._clock = clock
        self._backoff_initial_s = backoff_initial_s
        self._backoff_max_s = backoff_max_s
        self._close_timeout_s = close_timeout_s
        self._throttle = _Throttle(log_interval_s, clock)
        self._queue: deque[StoredRecord] = deque()
        # One writer at a time, so a flush() and the background task never reorder batches.
        self._write_lock = asyncio.Lock()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._closed = False
        self._failing = False
        self._dropped = 0
        self._written = 0
        self._write_failures = 0
        self._unpriced: set[str] = set()
        for model in {cloud_model, settings.counterfactual_model or cloud_model}:
            self._check_priced(model)

    def __repr__(self) -> str:
        return f"Ledger(store={self.store!r}, queued={len(self._queue)})"

    @property
    def queue_depth(self) -> int:
        """Records waiting to be written (a batch being written is not counted)."""
        return len(self._queue)

    @property
    def dropped(self) -> int:
        return self._dropped

    @property
    def written(self) -> int:
        return self._written

    @property
    def write_failures(self) -> int:
        """Failed batch writes (each retry that fails counts again)."""
        return self._write_failures

    def record(self, record: LedgerRecord, costs: Costs | None = None) -> None:
        """Queue a finished request's record, priced here unless ``costs`` is given.

        Never blocks, never raises (event loop only).
        """
        try:
            if self._closed:
                self._drop(1, "the ledger is closed")
                return
            if len(self._queue) >= self._settings.max_queue:
                self._drop(1, f"the queue is full ({self._settings.max_queue} waiting)")
                return
            if costs is None:
                costs = price_costs(record, self._settings, self._cloud_model)
            self._queue.append(StoredRecord(record, costs))
            if record.cloud_model:
                self._check_priced(record.cloud_model)
            # While the store is failing the backoff decides when to retry, not the traffic.
            if len(self._queue) >= self._settings.batch_size and not self._failing:
                self._wake.set()
        except Exception:
            self._dropped += 1
            self._throttle.log(
                "record-failed",
                logging.ERROR,
                "ledger: dropped a record that could not be queued (%d dropped in total)",
                self._dropped,
                exc_info=True,
            )

    async def start(self) -> None:
        """Start the background writer (in the running event loop)."""
        if self._task is None and not self._stopping:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="ledger-writer")

    async def flush(self) -> None:
        """Write what is queued now; on a store failure leave it queued for the retries."""
        await self._write_queued(len(self._queue))

    async def aclose(self) -> None:
        """Stop the writer, write what is queued (up to ``close_timeout_s``), close the store."""
        if self._closed:
            return
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            # Not cancelled: a write cancelled mid-way would go on in the store's thread
            # while its batch was re-queued, and be written twice.
            await asyncio.wait([self._task])
        deadline = self._clock() + self._close_timeout_s
        backoff = self._backoff_initial_s
        while self._queue:
            if await self._write_queued(len(self._queue)):
                continue
            left = deadline - self._clock()
            if left <= 0:
                break
            await asyncio.sleep(min(backoff, left))
            backoff = min(backoff * 2, self._backoff_max_s)
        # No await between the last check of the queue and this: nothing slips in unwritten.
        self._closed = True
        if self._queue:
            lost = len(self._queue)
            self._queue.clear()
            self._dropped += lost
            logger.error(
                "ledger: %d record(s) not written before shutdown are lost "
                "(%d dropped in total, %d written)",
                lost,
                self._dropped,
                self._written,
            )
        try:
            await self.store.aclose()
        except Exception:
            logger.exception("ledger: closing the store failed")

    async def _run(self) -> None:
        delay = self._settings.flush_interval_s
        backoff = self._backoff_initial_s
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            self._wake.clear()
            if self._stopping:
                break
            try:
                ok = await self._write_queued(len(self._queue))
            except Exception:
                # A bug here must not end the writer: the queue would only grow.
                logger.exception("ledger: the writer failed unexpectedly")
                ok = False
            if ok:
                delay = self._settings.flush_interval_s
                backoff = self._backoff_initial_s
            else:
                delay = backoff
                backoff = min(backoff * 2, self._backoff_max_s)

    async def _write_queued(self, limit: int) -> bool:
        """Write up to ``limit`` queued records in batches; False if the store failed."""
        async with self._write_lock:
            limit = min(limit, len(self._queue))
            while limit > 0:
                size = min(limit, self._settings.batch_size, len(self._queue))
                if size == 0:
                    break
                batch = [self._queue.popleft() for _ in range(size)]
                try:
                    await self.store.write(batch)
                    self._written += size
                except _DATA_ERRORS:
                    if not await self._write_singly(batch):
                        return False
                except Exception as exc:
                    self._failed(batch, exc)
                    return False
                limit -= size
                if self._failing:
                    self._failing = False
                    logger.info(
                        "ledger: writing to %r works again (%d queued)",
                        self.store,
                        len(self._queue),
                    )
            return True

    async def _write_singly(self, batch: list[StoredRecord]) -> bool:
        """Write a batch the store refused for its data one row at a time, dropping (and
        counting) the rows it refuses, so one bad record cannot stall the others for good.
        False when the store itself fails on the way (the rest is queued again)."""
        for index, row in enumerate(batch):
            try:
                await self.store.write([row])
            except _DATA_ERRORS as exc:
                self._dropped += 1
                self._throttle.log(
                    "refused",
                    logging.ERROR,
                    "ledger: dropped record %r: the store refused its data (%s: %s); "
                    "%d dropped in total",
                    row.record.request_id,
                    type(exc).__name__,
                    exc,
                    self._dropped,
                )
                continue
            except Exception as exc:
                self._failed(batch[index:], exc)
                return False
            self._written += 1
        return True

    def _failed(self, batch: list[StoredRecord], exc: Exception) -> None:
        """The store failed (unavailable, locked, full): keep the batch for the retries."""
        self._requeue(batch)
        self._write_failures += 1
        self._failing = True
        self._throttle.log(
            "write-failed",
            logging.WARNING,
            "ledger: writing %d record(s) to %r failed (%s: %s); %d queued, "
            "retrying (%d failed writes, %d dropped so far)",
            len(batch),
            self.store,
            type(exc).__name__,
            exc,
            len(self._queue),
            self._write_failures,
            self._dropped,
        )

    def _requeue(self, batch: list[StoredRecord]) -> None:
        self._queue.extendleft(reversed(batch))
        excess = len(self._queue) - self._settings.max_queue
        if excess > 0:
            for _ in range(excess):
                self._queue.popleft()
            self._drop(excess, "the store is failing and the queue is full (oldest dropped)")

    def _drop(self, count: int, why: str) -> None:
        self._dropped += count
        self._throttle.log(
            f"drop:{why}",
            logging.WARNING,
            "ledger: dropped %d record(s): %s (%d dropped in total)",
            count,
            why,
            self._dropped,
        )

    def _check_priced(self, model: str) -> None:
        if model in self._settings.prices or model in self._unpriced:
            return
        self._unpriced.add(model)
        logger.warning(
            "ledger: no price for cloud model %r; using GATEWAY_LEDGER__DEFAULT_PRICE "
            "(%s in, %s out per million tokens)",
            model,
            self._settings.default_price.input_usd_per_mtok,
            self._settings.default_price.output_usd_per_mtok,
        )
