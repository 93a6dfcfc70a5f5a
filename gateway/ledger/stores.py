"""Which store keeps the ledger: Postgres when ``GATEWAY_LEDGER__URL`` is set, else SQLite."""

from __future__ import annotations

from gateway.ledger.store import SQLiteStore, VersionedStore
from gateway.settings import LedgerSettings


def open_store(settings: LedgerSettings) -> VersionedStore:
    """The configured store, not yet connected (it connects and migrates on first use)."""
    if settings.url is not None:
        # Imported here: a SQLite gateway never loads the Postgres driver.
        from gateway.ledger.postgres import PostgresStore

        return PostgresStore(settings.url.get_secret_value())
    return SQLiteStore(settings.path)


def describe_store(settings: LedgerSettings) -> str:
    """Where the ledger is, for people: the SQLite path or the URL without its password."""
    if settings.url is not None:
        from gateway.ledger.postgres import redact_url

        return redact_url(settings.url.get_secret_value())
    return str(settings.path)
