"""The SQLite store on its own; the `store` fixture (every contract test on every store,
like anyio's backends) is in tests/conftest.py.

A new store joins `STORES` in tests/conftest.py and must pass `test_contract.py` unchanged.
"""

import pytest

from backbeat.stores import SQLiteStore


@pytest.fixture
async def sqlite_store(tmp_path):
    opened = SQLiteStore(tmp_path / "tasks.db")
    await opened.open()
    yield opened
    await opened.close()
