"""Starting whatever the store's state: a store that cannot be reached at start-up is
tried again, with backoff, instead of failing the app's start (a crash loop for a
deploy during a Redis blip, or a stack restarted in the wrong order).

Meanwhile the app serves: a request that would store a task gets a 503 with
``Retry-After`` (its write fails, as when the store goes away later), other routes
answer as usual. One WARNING line at start-up, one per retry (at most every
`MAX_RETRY_WAIT` seconds), one INFO line once the store answers; then this process
starts running tasks. At start-up only an unreachable store, and a store not created yet
where this process may not create one (a worker's SQLite file: the app creates it), are
waited out: a bad URL or a corrupt store is a mistake to fix, and still fails the start
at once; once the app runs, any error of a retry is logged (ERROR) and tried again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from backbeat.stores.base import Store, StoreError, StoreMissing, StoreUnavailable

logger = logging.getLogger("backbeat")

FIRST_RETRY_WAIT = 0.5
MAX_RETRY_WAIT = 10.0


class StoreConnection:
    """Opens the store and runs `on_open` (start the worker); retries while unreachable."""

    def __init__(self, store: Store, on_open: Callable[[], Awaitable[None]]) -> None:
        self.store = store
        self.on_open = on_open
        self.connected = asyncio.Event()
        self._retrying: asyncio.Task[None] | None = None
        self._answered = asyncio.Event()

    async def open(self) -> None:
        """Open now, or log why not and keep trying in the background."""
        try:
            await self._attempt()
        except (StoreUnavailable, StoreMissing) as exc:
            _log_waiting(self.store, exc, 1, None)
            self._retrying = asyncio.get_running_loop().create_task(self._retry())

    def store_answered(self) -> None:
        """A request's write went through: the store is back, try now (not at the next step)."""
        if self._retrying is not None and not self.connected.is_set():
            self._answered.set()

    async def close(self) -> None:
        if self._retrying is not None:
            self._retrying.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._retrying
            self._retrying = None

    async def _attempt(self) -> None:
        await self.store.open()
        await self.on_open()
        self.connected.set()

    async def _retry(self) -> None:
        wait = FIRST_RETRY_WAIT
        failures = 1
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._answered.wait()
            self._answered.clear()
            try:
                await self._attempt()
            except (StoreUnavailable, StoreMissing) as exc:
                failures += 1
                wait = min(wait * 2, MAX_RETRY_WAIT)
                _log_waiting(self.store, exc, failures, wait)
                continue
            except Exception as exc:
                # Reachable but not usable (a replica that refuses writes after a failover,
                # a file found corrupt): say so loudly, and keep trying at the slowest pace.
                failures += 1
                wait = MAX_RETRY_WAIT
                logger.error(
                    "backbeat: store %r cannot be used (%d tries), retrying in %.1fs: %s: %s",
                    self.store,
                    failures,
                    wait,
                    type(exc).__name__,
                    exc,
                )
                continue
            logger.info("backbeat: store %r connected after %d tries", self.store, failures + 1)
            return


def _log_waiting(store: Store, exc: StoreError, tries: int, wait: float | None) -> None:
    """One WARNING line per try (`wait`: None at start-up, else the next try's delay)."""
    if isinstance(exc, StoreMissing):  # a worker's: it never creates a store, the app does
        if wait is None:
            logger.warning("backbeat: %s yet: waiting for the app to create it", exc)
        else:
            logger.warning(
                "backbeat: %s yet (%d tries): waiting for the app to create it, looking again "
                "in %.1fs",
                exc,
                tries,
                wait,
            )
    elif wait is None:
        logger.warning("backbeat: store %r unreachable, retrying: %s", store, exc)
    else:
        logger.warning(
            "backbeat: store %r still unreachable (%d tries), retrying in %.1fs: %s",
            store,
            tries,
            wait,
            exc,
        )
