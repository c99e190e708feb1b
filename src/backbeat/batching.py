"""`TurnBatch` and `TurnGroup`: the calls made during one turn of the event loop, done as one.

Many requests finishing in the same turn each want a small write (make my
tasks runnable, record my success); one write for all of them is what makes
a store fast. Callers do not wait: `flush` reports its own errors.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeAlias, TypeVar

T = TypeVar("T")


class TurnBatch(Generic[T]):
    """Items added during one turn of the loop, flushed as one.

    ``one_at_a_time``: while a flush is in flight, what is added waits for it and goes in
    the next one, with everything else added meanwhile. Under load the writes grow instead
    of multiplying (a busy worker's outcomes: fewer, larger statements, one connection),
    at the cost of waiting for at most one write; otherwise each turn flushes at once."""

    def __init__(
        self, flush: Callable[[list[T]], Coroutine[Any, Any, None]], *, one_at_a_time: bool = False
    ) -> None:
        self.flush = flush
        self.one_at_a_time = one_at_a_time
        self._items: list[T] = []
        self._flushing: set[asyncio.Task[None]] = set()
        # A write in flight (`one_at_a_time`): over as soon as its flush returns, not when its
        # task's done callbacks have run (an item added between the two would wait for ever).
        self._writing = False

    def add(self, *items: T) -> None:
        if not self._items and not self._writing:
            asyncio.get_running_loop().call_soon(self._flush)
        self._items.extend(items)

    def _flush(self) -> None:
        items, self._items = self._items, []
        self._writing = self.one_at_a_time
        # Outside any request's context: the flush belongs to no one request.
        task = asyncio.get_running_loop().create_task(
            self._flush_one(items), context=contextvars.Context()
        )
        self._flushing.add(task)
        task.add_done_callback(self._flushing.discard)

    async def _flush_one(self, items: list[T]) -> None:
        try:
            await self.flush(items)
        finally:
            if self.one_at_a_time:
                self._writing = False
                if self._items:  # added while this write was in flight: the next one
                    asyncio.get_running_loop().call_soon(self._flush)

    async def settle(self) -> None:
        """Wait for what was added so far to be flushed (at shutdown)."""
        await asyncio.sleep(0)  # let this turn's batch start
        if self._flushing:
            await asyncio.gather(*self._flushing, return_exceptions=True)


R = TypeVar("R")
# What a group's run returns: a thread's future (SQLite's writer) or the loop's (Redis).
_Running: TypeAlias = "concurrent.futures.Future[R] | asyncio.Future[R]"


class TurnGroup(Generic[T, R]):
    """Calls made during one turn of the event loop, done as one; each caller awaits its own
    answer. `run` takes the turn's items and returns a future of one answer (or the
    exception to raise) per item; it may run in another thread."""

    def __init__(
        self,
        run: Callable[[list[T]], _Running[list[R | BaseException]]],
        done: Callable[[], None] = lambda: None,
    ) -> None:
        self.run = run
        self.done = done  # called once the whole group is through
        # Per event loop: a store may be used from several (the app's, a portal's).
        self._waiting: dict[asyncio.AbstractEventLoop, list[tuple[T, asyncio.Future[R]]]] = {}

    async def call(self, item: T) -> R:
        loop = asyncio.get_running_loop()
        group = self._waiting.get(loop)
        if group is None:
            group = self._waiting[loop] = []
            loop.call_soon(self._start, loop)
        answer: asyncio.Future[R] = loop.create_future()
        group.append((item, answer))
        return await answer

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        group = self._waiting.pop(loop)
        try:
            running = self.run([item for item, _ in group])
        except Exception as exc:
            for _, answer in group:
                if not answer.done():
                    answer.set_exception(exc)
            return

        def answer_each(outcome: asyncio.Future[list[R | BaseException]]) -> None:
            error = outcome.exception()
            if error is None:
                self.done()
            for index, (_, answer) in enumerate(group):
                if answer.done():
                    continue  # its caller gave up
                result = error or outcome.result()[index]
                if isinstance(result, BaseException):
                    answer.set_exception(result)
                else:
                    answer.set_result(result)

        asyncio.wrap_future(running, loop=loop).add_done_callback(answer_each)
