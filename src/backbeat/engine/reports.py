"""Where a stored task's `backbeat.progress(...)` reports go: to its store, batched.

Reports come from the task, on the worker's loop or (a sync task) in its thread; the
last report of each task in one turn of the loop is written, the others are dropped.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from typing import Any

from pydantic_core import PydanticSerializationError, to_json

from backbeat.batching import TurnBatch
from backbeat.progress import Reporter
from backbeat.stores.base import Store, StoreError

logger = logging.getLogger("backbeat")


class ProgressReports:
    def __init__(self, store: Store) -> None:
        self.store = store
        self._batch: TurnBatch[tuple[str, str]] = TurnBatch(self._keep)
        self._loop: asyncio.AbstractEventLoop | None = None

    def reporter(self, receipt: str) -> Reporter:
        """What an attempt's `backbeat.progress(...)` calls (made on the worker's loop)."""
        self._loop = asyncio.get_running_loop()
        return functools.partial(self._report, receipt)

    def _report(self, receipt: str, report: dict[str, Any]) -> None:
        try:
            document = to_json(report).decode()
        except (PydanticSerializationError, TypeError, ValueError) as exc:
            raise TypeError(f"progress(...) takes JSON values: {exc}") from None
        assert self._loop is not None
        try:
            on_loop = asyncio.get_running_loop() is self._loop
        except RuntimeError:
            on_loop = False
        if on_loop:
            self._batch.add((receipt, document))
        else:
            self._loop.call_soon_threadsafe(self._batch.add, (receipt, document))

    async def _keep(self, reports: list[tuple[str, str]]) -> None:
        latest = dict(reports)  # one write per task: its last report of this loop turn
        for receipt, document in latest.items():
            try:
                await self.store.progress(receipt, document)
            except StoreError as exc:
                logger.warning("backbeat: cannot record a task's progress: %s", exc)

    async def settle(self) -> None:
        await self._batch.settle()
