"""The `store` fixture: every contract test runs on every store, like anyio's backends.

A new store joins `STORES` and must pass `test_contract.py` unchanged.
"""

import pytest

from backbeat.stores import MemoryStore, SQLiteStore, open_store
from tests.redis_server import forget, fresh_prefix_url

STORES = ["sqlite", "memory", "redis"]


@pytest.fixture(params=STORES)
async def store(request, tmp_path):
    if request.param == "sqlite":
        opened = SQLiteStore(tmp_path / "tasks.db")
    elif request.param == "memory":
        opened = MemoryStore()
    else:
        url = fresh_prefix_url(request.getfixturevalue("redis_server"))
        opened = open_store(url)
    await opened.open()
    yield opened
    await opened.close()
    if request.param == "redis":
        forget(url)


@pytest.fixture
async def sqlite_store(tmp_path):
    opened = SQLiteStore(tmp_path / "tasks.db")
    await opened.open()
    yield opened
    await opened.close()
