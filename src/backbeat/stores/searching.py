"""What every store's `search` and `failure_groups` share: the checks of their input, the
filter's bounds on ids, the walk that stops at `limit` matches or `scan` tasks looked at,
and the grouping of failures.

Ids sort by creation time (`backbeat.ids`), so `before`, ``created_after``,
``created_before`` and an id prefix all become one range of ids: a search walks that range
newest first and never reads past it (keyset on the primary key, no other index).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TypeVar

from backbeat.ids import lowest_id
from backbeat.status import STATES, TaskState
from backbeat.stores.inspection import FailureGroup, TaskFilter
from backbeat.stores.states import StoredState

T = TypeVar("T")

# Above every character of an id: a prefix's ids all sort below the prefix and this.
_PAST_ID_CHARS = "\x7f"


def check_search(where: TaskFilter, limit: int, scan: int) -> None:
    """ValueError for a search that cannot be made (each store checks before it reads)."""
    if limit <= 0:
        raise ValueError(f"limit must be at least 1, not {limit}")
    if scan <= 0:
        raise ValueError(f"scan must be at least 1, not {scan}")
    if where.state is not None and where.state not in STATES:
        raise ValueError(f"unknown task state {where.state!r}: the states are {', '.join(STATES)}")


def check_scan(scan: int) -> None:
    if scan <= 0:
        raise ValueError(f"scan must be at least 1, not {scan}")


@dataclass(frozen=True, slots=True)
class IdRange:
    """The ids a search may match: below `below` (exclusive), from `lowest` (inclusive)."""

    below: str | None
    lowest: str | None

    @property
    def empty(self) -> bool:
        return self.below is not None and self.lowest is not None and self.lowest >= self.below

    def holds(self, task_id: str) -> bool:
        return (self.below is None or task_id < self.below) and (
            self.lowest is None or task_id >= self.lowest
        )


def id_range(where: TaskFilter, before: str | None) -> IdRange:
    """The filter's times and id prefix, and the cursor, as one range of ids."""
    uppers = [before] if before is not None else []
    lowers = []
    if where.created_before is not None:
        uppers.append(lowest_id(where.created_before))
    if where.created_after is not None:
        lowers.append(lowest_id(where.created_after))
    if where.id:
        uppers.append(where.id + _PAST_ID_CHARS)
        lowers.append(where.id)
    return IdRange(min(uppers) if uppers else None, max(lowers) if lowers else None)


def walk(
    candidates: Iterable[T],
    id_of: Callable[[T], str],
    matches: Callable[[T], bool],
    limit: int,
    scan: int,
) -> tuple[list[T], str | None, int]:
    """Look at candidates (newest first) until `limit` match or `scan` were looked at.

    Returns the matches, the cursor (the last match when the page is full, the last
    candidate looked at when `scan` ran out first, None when the candidates ran out) and
    how many were looked at."""
    found: list[T] = []
    scanned = 0
    for candidate in candidates:
        scanned += 1
        if matches(candidate):
            found.append(candidate)
            if len(found) == limit:
                return found, id_of(candidate), scanned
        if scanned == scan:
            return found, id_of(candidate), scanned
    return found, None, scanned


def exception_of(error: str | None) -> str:
    """The exception type of an error as the engine writes it ("Type: message")."""
    if error is None:
        return ""
    return error.partition(": ")[0]


def group_failures(failed: Iterable[tuple[str, str | None, str, float]]) -> list[FailureGroup]:
    """Failed tasks, as (name, error, id, finished_at), grouped by name and exception
    type: largest group first, then the one that failed last."""
    groups: dict[tuple[str, str], FailureGroup] = {}
    for name, error, task_id, finished_at in failed:
        key = (name, exception_of(error))
        group = groups.get(key)
        if group is None:
            groups[key] = FailureGroup(name, key[1], 1, task_id, finished_at, error)
            continue
        group.count += 1
        if (finished_at, task_id) > (group.latest_at, group.latest_id):
            group.latest_id, group.latest_at, group.example = task_id, finished_at, error
    return sort_groups(groups.values())


def sort_groups(groups: Iterable[FailureGroup]) -> list[FailureGroup]:
    return sorted(groups, key=lambda g: (-g.count, -g.latest_at, g.name, g.exception, g.latest_id))


def stored_states(state: str) -> tuple[str, ...]:
    """The states as stored of tasks shown in `state`: `shown_state` the other way round,
    for a search to read only those (due times then tell pending from scheduled)."""
    if state in (TaskState.PENDING, TaskState.SCHEDULED):
        return (StoredState.HELD.value, StoredState.PENDING.value)
    return (state,)
