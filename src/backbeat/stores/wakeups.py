"""In-process wake-ups (`Store.wait`'s signal), and the due-time hint that times its sleep.

A write that makes work runnable calls `notify`; every event loop waiting in
`wait` on the same data in this process wakes, whichever thread it runs in
(the app's loop, a worker's, a sync caller's portal). Other processes' writes
are not seen: the waiting side polls for them (its timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time


class Wakeups:
    """One signal, waited on from any number of event loops."""

    def __init__(self) -> None:
        self._events: dict[asyncio.AbstractEventLoop, asyncio.Event] = {}
        self._lock = threading.Lock()

    def notify(self) -> None:
        try:
            current: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            current = None
        with self._lock:
            if current is not None and current not in self._events:
                # Its waiter may be about to wait for the first time: keep the signal.
                self._events[current] = asyncio.Event()
            waiting = list(self._events.items())
        for loop, event in waiting:
            if loop is current:
                event.set()
            elif loop.is_closed():
                with self._lock:
                    self._events.pop(loop, None)
            else:
                with contextlib.suppress(RuntimeError):  # closed meanwhile
                    loop.call_soon_threadsafe(event.set)

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - the store contract
        loop = asyncio.get_running_loop()
        event = self._events.get(loop)
        if event is None:
            with self._lock:
                event = self._events.setdefault(loop, asyncio.Event())
        if not event.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await event.wait()
        # Cleared after waking, never before waiting: a notify that came while the caller
        # was busy makes this return at once, and the caller looks again.
        event.clear()


class DueHint:
    """When the next waiting task falls due, as the latest claim saw it in its own
    transaction, lowered by the writes made since: `Store.wait` sleeps until then without
    asking the store again, if the claim ran less than `FRESH` seconds ago."""

    FRESH = 0.05

    def __init__(self) -> None:
        self._seen_at = -1.0
        self._soonest: float | None = None

    def seen(self, soonest: float | None) -> None:
        """What a claim found, just now."""
        self._seen_at = time.monotonic()
        self._soonest = soonest

    def forget(self) -> None:
        """What the last claim saw no longer holds (a queue it left out is resumed)."""
        self._seen_at = -1.0
        self._soonest = None

    def sooner(self, due: float) -> None:
        """A task written now is due then: the next due time may come earlier."""
        if self._soonest is None or due < self._soonest:
            self._soonest = due

    def fresh(self) -> bool:
        return time.monotonic() - self._seen_at < self.FRESH

    @property
    def soonest(self) -> float | None:
        return self._soonest
