"""The request ledger: one record per request, its cost, stored off the request path.

record.py   LedgerRecord: the facts of one finished request
cost.py     price_costs: cloud cost, local cost/energy estimates, all-cloud counterfactual
store.py    LedgerStore (interface), SQLiteStore, the row <-> column mapping
postgres.py PostgresStore, for replicas sharing one ledger (imported only when configured)
stores.py   open_store: Postgres when GATEWAY_LEDGER__URL is set, else SQLite
writer.py   Ledger: the queue between the request path and the store
summary.py  summarize / parse_since: usage over a window (/v1/usage, ``report``)
report.py   ``hybrid-gateway report`` output; plot.py its ``--plot``
"""

from gateway.ledger.cost import Costs, price_costs
from gateway.ledger.record import LedgerRecord
from gateway.ledger.store import (
    LedgerDataError,
    LedgerStore,
    LedgerStoreError,
    Migration,
    SQLiteStore,
    StoredRecord,
    VersionedStore,
)
from gateway.ledger.stores import open_store
from gateway.ledger.summary import parse_since, summarize
from gateway.ledger.writer import Ledger

__all__ = [
    "Costs",
    "Ledger",
    "LedgerDataError",
    "LedgerRecord",
    "LedgerStore",
    "LedgerStoreError",
    "Migration",
    "SQLiteStore",
    "StoredRecord",
    "VersionedStore",
    "open_store",
    "parse_since",
    "price_costs",
    "summarize",
]
