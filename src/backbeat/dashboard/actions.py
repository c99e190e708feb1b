"""The actions: which task states each one applies to, and doing them in bounded batches.

A bulk action on "everything matching the filter" pages through `Store.search` and acts on
the matches in a valid state, at most `BATCH` ids per store call, so a filter that matches
a million tasks is never one giant write nor one giant read.

A filter's error is a piece of the message (``ValueError`` finds ``MyValueError: ...``
too): a failure group's retry also names its exception type, and only the tasks that failed
with exactly that type are acted on (`Selection.exception`), as `Store.failure_groups`
grouped them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from backbeat.dashboard.source import Source
from backbeat.status import FINISHED
from backbeat.stores.base import StoredStatus
from backbeat.stores.inspection import TaskFilter
from backbeat.stores.searching import exception_of

logger = logging.getLogger("backbeat")

BATCH = 500
SEARCH_SCAN = 10_000
COUNT_LIMIT = 100_000  # the confirmation page counts up to this many matches

# The task actions and the states (as `TaskInfo` shows them) each is offered for.
TASK_ACTIONS: dict[str, tuple[str, ...]] = {
    "retry": ("failed",),
    "run_now": ("pending", "scheduled"),
    "cancel": ("pending", "scheduled", "running"),
    "delete": FINISHED,
}
LABELS = {
    "retry": "Retry",
    "run_now": "Run now",
    "cancel": "Cancel",
    "delete": "Delete",
    "purge": "Purge",
    "pause_queue": "Pause queue",
    "resume_queue": "Resume queue",
    "pause_schedule": "Pause schedule",
    "resume_schedule": "Resume schedule",
}
PAST = {
    "retry": "retried",
    "run_now": "made due now",
    "cancel": "cancelled",
    "delete": "deleted",
}


def actions_for(state: str) -> list[str]:
    return [action for action, states in TASK_ACTIONS.items() if state in states]


@dataclass(frozen=True, slots=True)
class Selection:
    """The tasks a bulk action on a filter is on: those `where` finds, in a state the
    action is valid for, and with `exception` given, only those whose error is of exactly
    that exception type ("" for those that failed without an error)."""

    where: TaskFilter
    exception: str | None = None

    def takes(self, action: str, task: StoredStatus) -> bool:
        if _state(task.state) not in TASK_ACTIONS[action]:
            return False
        return self.exception is None or exception_of(task.error) == self.exception


@dataclass(slots=True)
class Matches:
    """What a bulk action would act on: how many tasks, and whether counting stopped."""

    count: int = 0
    capped: bool = False
    ids: list[str] = field(default_factory=list)


async def count_matches(source: Source, action: str, selection: Selection) -> Matches:
    """How many tasks of the selection the action applies to (up to `COUNT_LIMIT`)."""
    matches = Matches()
    before: str | None = None
    while True:
        page = await source.search(selection.where, limit=BATCH, before=before, scan=SEARCH_SCAN)
        matches.count += sum(1 for task in page.tasks if selection.takes(action, task))
        if page.cursor is None:
            return matches
        if matches.count >= COUNT_LIMIT:
            matches.capped = True
            return matches
        before = page.cursor


async def act_on_filter(source: Source, action: str, selection: Selection) -> int:
    """Do `action` on every task of the selection it applies to, `BATCH` at a time."""
    done = 0
    before: str | None = None
    while True:
        page = await source.search(selection.where, limit=BATCH, before=before, scan=SEARCH_SCAN)
        ids = [task.id for task in page.tasks if selection.takes(action, task)]
        if ids:
            done += await act_on_ids(source, action, ids)
        if page.cursor is None:
            return done
        before = page.cursor


async def act_on_ids(source: Source, action: str, ids: list[str]) -> int:
    doing: dict[str, Callable[[list[str]], Any]] = {
        "retry": source.retry,
        "run_now": source.run_now,
        "cancel": source.cancel,
        "delete": source.delete,
    }
    done = 0
    for start in range(0, len(ids), BATCH):
        done += await doing[action](ids[start : start + BATCH])
    return done


def _state(stored: str) -> str:
    # `search` gives states as stored: held is shown as pending; a pending task not yet
    # due is "scheduled" only in `TaskInfo`, and both are valid for the same actions.
    return "pending" if stored == "held" else stored
