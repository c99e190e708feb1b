"""LISTEN/NOTIFY as a hint for `Store.wait`: one listening connection per process and store.

The code that writes tasks sends ``pg_notify`` in its own transaction (never a trigger: a
NOTIFY is queued under a lock every committing writer of the database then waits for, so
only the writes that make work runnable pay it, once per queue). PostgreSQL delivers it at
commit to this process's listening connection, which wakes every waiting store object of
the process (`backbeat.stores.wakeups`), whatever event loop it waits on. Writes made in
this process wake them directly as well, before the notification comes back.

A hint only: a notification can be missed (the listener reconnecting, a PgBouncer in
transaction mode in between), so a waiting worker still looks again at its timeout, and
at the soonest due time it read.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from backbeat.stores.wakeups import Wakeups

logger = logging.getLogger("backbeat")


class Listener:
    """The listening connection of one store (database and schema) in this process.

    It lives on the event loop of the first waiter that started it; a waiter on another
    loop starts it again only once that loop is closed or the connection is lost."""

    def __init__(self, connect: Callable[[], Awaitable[Any]], channel: str) -> None:
        self.wakeups = Wakeups()
        self._connect = connect
        self._channel = channel
        self._conn: Any = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self._starting = False

    def _listening(self) -> bool:
        loop = self._loop
        conn = self._conn
        return (
            conn is not None and not conn.is_closed() and loop is not None and not loop.is_closed()
        )

    async def listen(self) -> None:
        """Listen from this event loop, unless a live connection already does."""
        with self._lock:
            if self._starting or self._listening():
                return
            self._starting = True
        try:
            conn = await self._connect()
            await conn.add_listener(self._channel, self._heard)
            conn.add_termination_listener(self._lost)
            self._conn, self._loop = conn, asyncio.get_running_loop()
        except Exception as exc:  # polling covers for it; the next wait tries again
            logger.debug("backbeat: cannot LISTEN on PostgreSQL (polling meanwhile): %s", exc)
        finally:
            self._starting = False

    def _heard(self, *notification: object) -> None:
        self.wakeups.notify()

    def _lost(self, conn: Any) -> None:
        if conn is self._conn:
            self._conn = None
        self.wakeups.notify()  # what was missed meanwhile: the waiters look again

    async def close(self) -> None:
        """Stop listening, if this event loop's connection is the one that listens."""
        conn = self._conn
        if conn is None or self._loop is not asyncio.get_running_loop():
            return
        self._conn = self._loop = None
        with contextlib.suppress(Exception):  # gone already: nothing to close
            await conn.close(timeout=2)


# One per database and schema in this process.
_LISTENERS: dict[tuple[str, str], Listener] = {}
_REGISTRY_LOCK = threading.Lock()


def listener_for(dsn: str, channel: str, connect: Callable[[], Awaitable[Any]]) -> Listener:
    with _REGISTRY_LOCK:
        found = _LISTENERS.get((dsn, channel))
        if found is None:
            found = _LISTENERS[(dsn, channel)] = Listener(connect, channel)
        return found
