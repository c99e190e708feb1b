"""The `store` fixture: every contract test runs on every store, like anyio's backends.

A new store joins `STORES` in tests/conftest.py and must pass `test_contract.py` unchanged.
"""

import pytest

from backbeat.stores import SQLiteStore, open_store
from tests.conftest import STORES, store_url
from tests.redis_server import forget


@pytest.fixture(params=STORES)
async def store(request, tmp_path):
    url = store_url(request.param, request, tmp_path)
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
