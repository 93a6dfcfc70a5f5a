"""The request ledger: one record per request, its cost, stored off the request path.

record.py   LedgerRecord: the facts of one finished request
cost.py     price_costs: cloud cost, local cost/energy estimates, all-cloud counterfactual
store.py    LedgerStore (interface) and SQLiteStore
writer.py   Ledger: the queue between the request path and the store
summary.py  summarize / parse_since: usage over a window (/v1/usage, ``report``)
report.py   ``hybrid-gateway report`` output; plot.py its ``--plot``
"""

from gateway.ledger.cost import Costs, price_costs
from gateway.ledger.record import LedgerRecord
from gateway.ledger.store import LedgerStore, LedgerStoreError, SQLiteStore, StoredRecord
from gateway.ledger.summary import parse_since, summarize
from gateway.ledger.writer import Ledger

__all__ = [
    "Costs",
    "Ledger",
    "LedgerRecord",
    "LedgerStore",
    "LedgerStoreError",
    "SQLiteStore",
    "StoredRecord",
    "parse_since",
    "price_costs",
    "summarize",
]
