"""A runner without a store, seen as the dashboard sees a store: its in-process table.

Such a runner keeps its tasks as live objects in this process (`Runner.local_tasks`): no
arguments as JSON, no workers, no schedules, no limits, and nothing to retry, run now or
delete (a failed in-process task is gone with its closure). What it offers is reading and
cancelling; the pages say so.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from pydantic_core import to_json

from backbeat.status import FINISHED, STATES, TaskInfo, TaskState
from backbeat.stores.base import StoredStatus
from backbeat.stores.inspection import FailureGroup, TaskFilter, TaskPage

if TYPE_CHECKING:
    from backbeat.runner import Runner


class LocalView:
    """The read and cancel operations of a store, over a memory runner's table."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def _tasks(self) -> list[StoredStatus]:
        """Newest first, as a store lists them (ids sort by creation time)."""
        rows = [_row(info) for info in self.runner.local_tasks()]
        rows.sort(key=lambda row: row.id, reverse=True)
        return rows

    async def counts(self, queue: str | None = None) -> dict[str, int]:
        if queue is None:
            return self.runner.stats()
        counts = dict.fromkeys(STATES, 0)
        for info in self.runner.local_tasks():
            if info.queue == queue:
                counts[info.state.value] += 1
        return counts

    async def queues(self) -> list[str]:
        return sorted({info.queue for info in self.runner.local_tasks()})

    async def list_tasks(self, *, state: str | None = None, limit: int = 50) -> list[StoredStatus]:
        rows = [row for row in self._tasks() if state is None or row.state == state]
        return rows[:limit]

    async def search(
        self, where: TaskFilter, *, limit: int = 50, before: str | None = None, scan: int = 10_000
    ) -> TaskPage:
        found: list[StoredStatus] = []
        scanned = 0
        last: str | None = None
        for row in self._tasks():
            if before is not None and row.id >= before:
                continue
            if scanned >= scan:
                return TaskPage(found, last, scanned)
            scanned += 1
            last = row.id
            if _matches(row, where):
                found.append(row)
                if len(found) == limit:
                    return TaskPage(found, row.id, scanned)
        return TaskPage(found, None, scanned)

    async def get(self, task_id: str) -> StoredStatus | None:
        info = self.runner.get(task_id)
        return None if info is None else _row(info)

    async def failure_groups(self, *, scan: int = 10_000) -> list[FailureGroup]:
        groups: dict[tuple[str, str], FailureGroup] = {}
        failed = [row for row in self._tasks() if row.state == TaskState.FAILED.value][:scan]
        for row in failed:  # newest first: the first of a group is its latest
            exception = (row.error or "").partition(": ")[0]
            group = groups.get((row.name, exception))
            if group is None:
                groups[(row.name, exception)] = FailureGroup(
                    row.name, exception, 1, row.id, row.finished_at or row.created_at, row.error
                )
            else:
                group.count += 1
        return sorted(groups.values(), key=lambda group: -group.count)

    async def cancel(self, ids: list[str], reason: str) -> int:
        cancelled = 0
        for task_id in ids:
            cancelled += await self.runner.acancel(task_id, reason)
        return cancelled


def _row(info: TaskInfo) -> StoredStatus:
    finished = info.state in FINISHED
    return StoredStatus(
        id=info.id,
        name=info.name,
        state=info.state.value,
        attempts=info.attempts,
        error=info.error,
        traceback=None,
        created_at=info.created_at.timestamp(),
        started_at=None if info.started_at is None else info.started_at.timestamp(),
        finished_at=None if info.finished_at is None else info.finished_at.timestamp(),
        # A scheduled in-process task's due time is its timer's, not kept in the table.
        due_at=info.created_at.timestamp() if finished else time.time(),
        # A live return value may be anything: shown as JSON where it is, else as its repr.
        result=None if info.result is None else to_json(info.result, fallback=repr).decode(),
        progress=None if info.progress is None else to_json(info.progress, fallback=repr).decode(),
        queue=info.queue,
    )


def _matches(row: StoredStatus, where: TaskFilter) -> bool:
    checks = (
        where.state is None or row.state == where.state,
        where.queue is None or row.queue == where.queue,
        where.name is None or row.name == where.name,
        where.id is None or row.id.startswith(where.id),
        where.argument is None,  # no arguments as JSON in process: a filter on them finds none
        where.error is None or (row.error is not None and where.error in row.error),
        where.created_after is None or row.created_at >= where.created_after,
        where.created_before is None or row.created_at < where.created_before,
    )
    return all(checks)
