"""`TurnBatch`: the calls made during one turn of the event loop, done as one.

Many requests finishing in the same turn each want a small write (make my
tasks runnable, record my success); one write for all of them is what makes
a store fast. Callers do not wait: `flush` reports its own errors.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class TurnBatch(Generic[T]):
    def __init__(self, flush: Callable[[list[T]], Coroutine[Any, Any, None]]) -> None:
        self.flush = flush
        self._items: list[T] = []
        self._flushing: set[asyncio.Task[None]] = set()

    def add(self, *items: T) -> None:
        if not self._items:
            asyncio.get_running_loop().call_soon(self._flush)
        self._items.extend(items)

    def _flush(self) -> None:
        items, self._items = self._items, []
        # Outside any request's context: the flush belongs to no one request.
        task = asyncio.get_running_loop().create_task(
            self.flush(items), context=contextvars.Context()
        )
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def settle(self) -> None:
        """Wait for what was added so far to be flushed (at shutdown)."""
        await asyncio.sleep(0)  # let this turn's batch start
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)
