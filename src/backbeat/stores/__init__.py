"""Durable stores: where tasks are kept so that they outlive the process."""

from backbeat.stores.base import (
    ClaimedTask,
    NewTask,
    Store,
    StoredStatus,
    StoreError,
    StoreMissing,
    StoreUnavailable,
)
from backbeat.stores.memory import MemoryStore
from backbeat.stores.sqlite import SQLiteStore


def open_store(url: str, *, create: bool = True) -> Store:
    """A store from its URL: ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
    ``redis://[user:password@]host:6379/0?prefix=NAME`` (`backbeat.stores.redis`),
    ``postgresql://user:password@host:5432/database?schema=NAME`` (`backbeat.stores.postgres`),
    or ``memory://`` (the interface in memory: for tests; nothing survives the process).

    ``create=False`` (the CLI's read-only commands) raises `StoreMissing` where
    there is no store yet, instead of making an empty one.
    """
    if url.startswith("sqlite:"):
        return SQLiteStore.from_url(url, create=create)
    if url == "memory://":
        return MemoryStore()
    scheme = url.partition(":")[0] or url
    if scheme in ("redis", "rediss", "unix"):
        # Imported here: redis-py is an optional extra, and the store module imports it
        # only when the store connects.
        from backbeat.stores.redis import RedisStore

        return RedisStore.from_url(url, create=create)
    if scheme in ("postgresql", "postgres"):
        # Imported here, as Redis's: asyncpg is an optional extra.
        from backbeat.stores.postgres import PostgresStore

        return PostgresStore.from_url(url, create=create)
    raise StoreError(
        f"unknown store {scheme!r} in {url!r}; supported: sqlite:///path.db, "
        "redis://host:6379/0 (also rediss://, unix://), postgresql://host/database, memory://"
    )


__all__ = [
    "ClaimedTask",
    "MemoryStore",
    "NewTask",
    "SQLiteStore",
    "Store",
    "StoreError",
    "StoreMissing",
    "StoreUnavailable",
    "StoredStatus",
    "open_store",
]
