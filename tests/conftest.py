from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import pytest


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


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
