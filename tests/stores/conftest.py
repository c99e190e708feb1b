"""The `store` fixture: every contract test runs on every store, like anyio's backends.

A new store joins `STORES` and must pass `test_contract.py` unchanged.
"""

import pytest

from backbeat.stores import MemoryStore, SQLiteStore

STORES = ["sqlite", "memory"]


@pytest.fixture(params=STORES)
async def store(request, tmp_path):
    opened = SQLiteStore(tmp_path / "tasks.db") if request.param == "sqlite" else MemoryStore()
    await opened.open()
    yield opened
    await opened.close()


@pytest.fixture
async def sqlite_store(tmp_path):
    opened = SQLiteStore(tmp_path / "tasks.db")
    await opened.open()
    yield opened
    await opened.close()
