"""Durable stores: where tasks are kept so that they outlive the process."""

from backbeat.stores.base import ClaimedTask, NewTask, Store, StoredStatus, StoreError
from backbeat.stores.memory import MemoryStore
from backbeat.stores.sqlite import SQLiteStore


def open_store(url: str) -> Store:
    """A store from its URL: ``sqlite:///relative.db``, ``sqlite:////absolute.db``, or
    ``memory://`` (the interface in memory: for tests; nothing survives the process)."""
    if url.startswith("sqlite:"):
        return SQLiteStore.from_url(url)
    if url == "memory://":
        return MemoryStore()
    scheme = url.partition(":")[0] or url
    raise StoreError(
        f"unknown store {scheme!r} in {url!r}; supported: sqlite:///path.db, memory://"
    )


__all__ = [
    "ClaimedTask",
    "MemoryStore",
    "NewTask",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoredStatus",
    "open_store",
]
