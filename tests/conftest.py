from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.redis_server import forget, fresh_prefix_url, redis_server  # noqa: F401 - a fixture


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# The stores a runner can use, and those that several runners (processes) share by URL.
# A new store joins both lists; the stored-engine tests then run on it too.
STORES = ["sqlite", "memory", "redis"]
SHARED_STORES = ["sqlite", "redis"]


def store_url(kind: str, request, tmp_path) -> str:
    if kind == "memory":
        return "memory://"
    if kind == "redis":
        return fresh_prefix_url(request.getfixturevalue("redis_server"))
    return f"sqlite:///{tmp_path}/tasks.db"


@pytest.fixture(params=STORES)
def db(request, tmp_path) -> Iterator[str]:
    """A store URL, for each kind of store."""
    url = store_url(request.param, request, tmp_path)
    yield url
    if request.param == "redis":
        forget(url)


@pytest.fixture(params=SHARED_STORES)
def shared_db(request, tmp_path) -> Iterator[str]:
    """A store URL that other runners and processes open too, for each such store."""
    url = store_url(request.param, request, tmp_path)
    yield url
    if request.param == "redis":
        forget(url)


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
