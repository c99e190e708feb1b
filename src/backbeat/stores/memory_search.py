"""The memory store's dashboard reads, as pure functions over its rows (`MemoryStore`
calls them under its lock): `search`, `failure_groups`, `oldest_due`."""

from __future__ import annotations

from collections.abc import Iterable

from backbeat.stores.inspection import FailureGroup, TaskFilter, TaskPage
from backbeat.stores.memory_rows import Row
from backbeat.stores.searching import (
    check_scan,
    check_search,
    group_failures,
    id_range,
    stored_states,
    walk,
)
from backbeat.stores.states import StoredState, shown_state


def matches(row: Row, where: TaskFilter, now: float) -> bool:
    task = row.task
    return (
        (where.state is None or shown_state(row.state, task.due_at, now) == where.state)
        and (where.queue is None or task.queue == where.queue)
        and (where.name is None or task.name == where.name)
        and (where.id is None or task.id.startswith(where.id))
        and (where.argument is None or where.argument in task.payload)
        and (where.error is None or (row.error is not None and where.error in row.error))
    )


def search(
    rows: Iterable[Row], where: TaskFilter, limit: int, before: str | None, scan: int, now: float
) -> TaskPage:
    check_search(where, limit, scan)
    bounds = id_range(where, before)
    if bounds.empty:
        return TaskPage([], None, 0)
    candidates = list(rows)
    if where.state is not None:
        # As a store with an index per state does: when that state holds no more tasks
        # than may be looked at, only they are candidates.
        states = stored_states(where.state)
        of_state = [row for row in candidates if row.state in states]
        if len(of_state) <= scan:
            candidates = of_state
    in_range = [row for row in candidates if bounds.holds(row.task.id)]
    in_range.sort(key=lambda row: row.task.id, reverse=True)
    found, cursor, scanned = walk(
        in_range, lambda row: row.task.id, lambda row: matches(row, where, now), limit, scan
    )
    return TaskPage([row.status() for row in found], cursor, scanned)


def failure_groups(rows: Iterable[Row], scan: int) -> list[FailureGroup]:
    check_scan(scan)
    failed = sorted(
        (row for row in rows if row.state == StoredState.FAILED), key=lambda row: row.task.id
    )
    return group_failures(
        (row.task.name, row.error, row.task.id, row.finished_at or 0.0) for row in failed[-scan:]
    )


def oldest_due(rows: Iterable[Row], queue: str | None, now: float) -> float | None:
    due = [
        row.task.due_at
        for row in rows
        if row.state == StoredState.PENDING
        and row.task.due_at <= now
        and queue in (None, row.task.queue)
    ]
    return min(due, default=None)
