"""`Observer`: what tracing and metrics integrations implement to watch every attempt.

An observer is told twice about a task: where it is handed over (`carry`, in the
context of the request or code that made it: what it returns is stored with the
task, so a worker in another process gets it back) and around each attempt
(`attempt`, in the task's own context, before its function runs; the returned
`Watch` hears how the attempt ended). `backbeat.otel` and `backbeat.prometheus`
are observers; ``runner.add_observer(...)`` adds one. An observer that raises is
logged and changes nothing about the task.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Protocol

from backbeat.status import TaskInfo, TaskState

logger = logging.getLogger("backbeat")

Carried = Mapping[str, str]


class Watch(Protocol):
    def end(self, state: TaskState, error: BaseException | None, seconds: float) -> None:
        """The attempt ended: SUCCEEDED, SCHEDULED (to be retried), FAILED or CANCELLED."""


class Observer:
    """Base class: override what you need."""

    def carry(self) -> dict[str, str] | None:
        """What to keep with a task handed over now (text only: it is stored as JSON)."""
        return None

    def attempt(self, info: TaskInfo, carried: Carried | None) -> Watch | None:
        """An attempt starts (``info.attempts`` is its number); `carried` is what `carry`
        returned where the task was handed over, or None (then the task runs in a copy of
        that context: look there)."""
        return None


def carry_all(observers: list[Observer]) -> dict[str, str] | None:
    carried: dict[str, str] = {}
    for observer in observers:
        try:
            carried.update(observer.carry() or {})
        except Exception:
            logger.exception("backbeat observer %r failed", observer)
    return carried or None


def watch_all(observers: list[Observer], info: TaskInfo, carried: Carried | None) -> list[Watch]:
    watches = []
    for observer in observers:
        try:
            watch = observer.attempt(info, carried)
        except Exception:
            logger.exception("backbeat observer %r failed", observer)
            continue
        if watch is not None:
            watches.append(watch)
    return watches


def end_all(
    watches: list[Watch], state: TaskState, error: BaseException | None, seconds: float
) -> None:
    for watch in reversed(watches):  # the last one started ends first
        try:
            watch.end(state, error, seconds)
        except Exception:
            logger.exception("backbeat observer %r failed", watch)
