"""Durable stores: where tasks are kept so that they outlive the process."""

import importlib

from backbeat.stores.base import (
    ClaimedTask,
    DuplicateTask,
    NewTask,
    Store,
    StoredStatus,
    StoreError,
    StoreMissing,
    StoreUnavailable,
)
from backbeat.stores.memory import MemoryStore
from backbeat.stores.sqlite import SQLiteStore

# Each URL scheme's store, as "module:class", imported the first time a URL asks for it:
# a store's client library (redis-py, asyncpg) is an optional extra, needed only then.
# The class makes the store from its URL: `from_url(url, create=...)`.
SCHEMES: dict[str, str] = {
    "sqlite": "backbeat.stores.sqlite:SQLiteStore",
    "redis": "backbeat.stores.redis:RedisStore",
    "rediss": "backbeat.stores.redis:RedisStore",
    "unix": "backbeat.stores.redis:RedisStore",
    "postgresql": "backbeat.stores.postgres:PostgresStore",
    "postgres": "backbeat.stores.postgres:PostgresStore",
    "memory": "backbeat.stores.memory:MemoryStore",
}


def open_store(url: str, *, create: bool = True) -> Store:
    """A store from its URL: ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
    ``redis://[user:password@]host:6379/0?prefix=NAME`` (also ``rediss://``, ``unix://``;
    `backbeat.stores.redis`), ``postgresql://user:password@host:5432/database?schema=NAME``
    (also ``postgres://``; `backbeat.stores.postgres`), or ``memory://`` (the interface in
    memory: for tests; nothing survives the process). The scheme picks the store from
    `SCHEMES`.

    ``create=False`` (the CLI's read-only commands) raises `StoreMissing` where
    there is no store yet, instead of making an empty one.
    """
    scheme = url.partition(":")[0] or url
    entry = SCHEMES.get(scheme)
    if entry is None:
        known = ", ".join(SCHEMES)
        raise StoreError(f"unknown store {scheme!r} in {url!r}; known schemes: {known}")
    module, _, name = entry.partition(":")
    store_class = getattr(importlib.import_module(module), name)
    store: Store = store_class.from_url(url, create=create)
    return store


__all__ = [
    "ClaimedTask",
    "DuplicateTask",
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
