"""Store calls for sync code: `runner.get()`, `runner.stats()`, `runner.submit()` in a script,
a task written when the app's transaction commits.

A store is async, and a network store's connections belong to the event loop
that opened them, so sync code cannot simply ``asyncio.run`` a store call:

* while the runner runs on a loop in another thread (a sync route handler in a
  thread pool, a thread of the app), the call is sent to that loop and the
  caller waits for its result;
* otherwise (no runner started — a script, the CLI, a management command — or
  sync code called on the runner's own loop), it runs on a portal: one daemon
  thread with an event loop of its own and the store's `twin`, opened when
  first used.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from backbeat.logs import about_task
from backbeat.stores.base import NewTask, Store

T = TypeVar("T")

logger = logging.getLogger("backbeat")


class BlockingCalls:
    """Runs a store's coroutines for callers that cannot await."""

    def __init__(self, store: Store) -> None:
        self.store = store
        # The loop the runner runs on, while it does (set by the engine).
        self.loop: asyncio.AbstractEventLoop | None = None
        self._portal: asyncio.AbstractEventLoop | None = None
        self._handle: Store | None = None
        self._lock = threading.Lock()

    def call(self, operation: Callable[[Store], Coroutine[Any, Any, T]]) -> T:
        loop = self.loop
        if loop is not None and loop.is_running() and not _running_on(loop):
            return asyncio.run_coroutine_threadsafe(operation(self.store), loop).result()
        portal, handle = self._open_portal()
        return asyncio.run_coroutine_threadsafe(operation(handle), portal).result()

    def write_committed(self, tasks: list[NewTask]) -> None:
        """Write tasks whose app transaction just committed (`Runner.submit_on_commit`). A
        failure is raised to whoever committed, whose transaction stays committed, and
        logged with the task's id: what ties it to the id the app was given."""
        try:
            self.call(lambda store: store.enqueue(tasks))
        except Exception as exc:
            first = tasks[0]
            logger.error(
                "backbeat: task %s (%s), written when its transaction committed, was not: %s",
                first.id,
                first.name,
                exc,
                extra=about_task(first.id, first.name, queue=first.queue),
            )
            raise

    def _open_portal(self) -> tuple[asyncio.AbstractEventLoop, Store]:
        with self._lock:
            if self._portal is None or self._handle is None:
                portal = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=portal.run_forever, name="backbeat-sync-calls", daemon=True
                )
                thread.start()
                handle = self.store.twin()
                try:
                    asyncio.run_coroutine_threadsafe(handle.open(), portal).result()
                except BaseException:
                    portal.call_soon_threadsafe(portal.stop)
                    raise
                self._portal, self._handle = portal, handle
            return self._portal, self._handle

    def close(self) -> None:
        """Stop the portal (closing the twin it opened, if it is not the store itself)."""
        with self._lock:
            portal, handle = self._portal, self._handle
            self._portal = self._handle = None
        if portal is None or handle is None:
            return
        if handle is not self.store:
            asyncio.run_coroutine_threadsafe(handle.close(), portal).result()
        portal.call_soon_threadsafe(portal.stop)


def _running_on(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
