from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from backbeat.stores import open_store
from tests import postgres_server as postgres
from tests.postgres_server import postgres_server  # noqa: F401 - a fixture
from tests.redis_server import forget, fresh_prefix_url, redis_server  # noqa: F401 - a fixture


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# The one registry of stores the tests run on: every store-parametrized fixture (`db`,
# `shared_db`, and the contract suite's `store` in tests/stores/conftest.py) takes its
# params from here. A new store joins `STORES` (and `SHARED_STORES` if other processes reach
# it by URL); the contract, stored-engine and worker-process tests then run on it too. A
# store that needs a server marks its param, so `make test-fast` leaves it out.
STORES = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("memory", id="memory"),
    pytest.param("redis", id="redis", marks=pytest.mark.redis),
    pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
]
SHARED_STORES = [param for param in STORES if param.id != "memory"]


def store_url(kind: str, request, tmp_path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "redis":
        return fresh_prefix_url(request.getfixturevalue("redis_server"))
    if kind == "postgres":
        return postgres.fresh_schema_url(request.getfixturevalue("postgres_server"))
    return f"sqlite:///{tmp_path}/tasks.db"


def forget_store(kind: str, url: str) -> None:
    """What a store kept on a server that outlives the test: gone."""
    if kind == "redis":
        forget(url)
    elif kind == "postgres":
        postgres.forget(url)


@pytest.fixture(params=STORES)
def db(request, tmp_path) -> Iterator[str]:
    """A store URL, for each kind of store."""
    url = store_url(request.param, request, tmp_path)
    yield url
    forget_store(request.param, url)


@pytest.fixture(params=SHARED_STORES)
def shared_db(request, tmp_path) -> Iterator[str]:
    """A store URL that other runners and processes open too, for each such store."""
    url = store_url(request.param, request, tmp_path)
    yield url
    forget_store(request.param, url)


@pytest.fixture(params=STORES)
async def store(request, tmp_path):
    """An opened store of each kind: the store contract's tests and the dashboard's run on
    every store, like anyio's backends."""
    url = store_url(request.param, request, tmp_path)
    opened = open_store(url)
    await opened.open()
    yield opened
    await opened.close()
    forget_store(request.param, url)


class RecordList(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def messages(self, level: int = logging.ERROR) -> list[str]:
        return [r.getMessage() for r in self.records if r.levelno >= level]


@contextmanager
def recording(logger_name: str) -> Iterator[RecordList]:
    """Records from one logger, whatever other libraries did to logging.

    (Lilya reconfigures logging when imported, which defeats pytest's caplog.)
    """
    handler = RecordList()
    logger = logging.getLogger(logger_name)
    previous = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.disabled = False
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.level, logger.disabled = previous


@pytest.fixture
def backbeat_log() -> Iterator[RecordList]:
    with recording("backbeat") as handler:
        yield handler
