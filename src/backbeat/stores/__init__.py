"""Durable stores: where tasks are kept so that they outlive the process."""

from backbeat.stores.base import ClaimedTask, NewTask, Store, StoredStatus, StoreError
from backbeat.stores.sqlite import SQLiteStore


def open_store(url: str) -> Store:
    """A store from its URL: ``sqlite:///relative.db`` or ``sqlite:////absolute.db``."""
    if url.startswith("sqlite:"):
        return SQLiteStore.from_url(url)
    scheme = url.partition(":")[0] or url
    raise StoreError(f"unknown store {scheme!r} in {url!r}; supported: sqlite:///path.db")


__all__ = [
    "ClaimedTask",
    "NewTask",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoredStatus",
    "open_store",
]
