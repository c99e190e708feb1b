"""What the runner knows about each task: `TaskInfo`, and the bounded table behind it.

Finished entries are kept for a bounded count and time, so memory stays flat
under load; counts by state are kept as the tasks move, so `stats()` is O(1).
"""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any


class TaskState(StrEnum):
    PENDING = "pending"  # waiting for a free slot (or for the task before it in a sequence)
    SCHEDULED = "scheduled"  # waiting for its delay or its next retry
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # every attempt failed; `error` says how the last one did
    CANCELLED = "cancelled"  # stopped by shutdown, or never delivered


# Module-level names: looking a member up on an Enum class costs ~20x a global.
PENDING = TaskState.PENDING
SCHEDULED = TaskState.SCHEDULED
RUNNING = TaskState.RUNNING
SUCCEEDED = TaskState.SUCCEEDED
FAILED = TaskState.FAILED
CANCELLED = TaskState.CANCELLED
# Every state as a plain string, in the order counts and tables show them, and the two kinds
# (`TaskState` members compare equal to these strings, and hash alike).
STATES = tuple(state.value for state in TaskState)
FINISHED = (SUCCEEDED.value, FAILED.value, CANCELLED.value)
UNFINISHED = tuple(state for state in STATES if state not in FINISHED)


def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


@dataclass(frozen=True, slots=True)
class TaskInfo:
    """A snapshot of one task's status."""

    id: str
    name: str
    state: TaskState
    attempts: int
    error: str | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    result: Any = None  # the task's return value, once it succeeded (JSON-decoded if stored)
    progress: dict[str, Any] | None = None  # the latest `backbeat.progress(...)` report
    queue: str = "default"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready: datetimes as ISO 8601 strings."""
        return {
            "id": self.id,
            "name": self.name,
            "state": self.state.value,
            "attempts": self.attempts,
            "error": self.error,
            "result": self.result,
            "progress": self.progress,
            "queue": self.queue,
            "created_at": self.created_at.isoformat(),
            "started_at": self.started_at and self.started_at.isoformat(),
            "finished_at": self.finished_at and self.finished_at.isoformat(),
        }


class TaskFailed(Exception):
    """`Runner.result`: the task failed for good; `info.error` says how the last attempt did."""

    def __init__(self, info: TaskInfo) -> None:
        super().__init__(f"task {info.name!r} (id {info.id}) {info.state.value}: {info.error}")
        self.info = info


class TaskCancelled(TaskFailed):
    """`Runner.result`: the task was cancelled (by `Runner.cancel`, or at shutdown)."""


class TaskRecord:
    """The runner's mutable entry for a task; read through `snapshot()`."""

    __slots__ = (
        "attempts",
        "created",
        "error",
        "finished",
        "id",
        "name",
        "progress",
        "queue",
        "result",
        "started",
        "state",
    )

    def __init__(self, task_id: str, name: str, created: float) -> None:
        self.id = task_id
        self.name = name
        self.state = PENDING
        self.attempts = 0
        self.error: str | None = None
        self.created = created
        self.started: float | None = None
        self.finished: float | None = None
        self.result: Any = None
        self.progress: dict[str, Any] | None = None
        self.queue = "default"

    def report(self, progress: dict[str, Any]) -> None:
        """Where `backbeat.progress(...)` reports go for an in-process task."""
        self.progress = progress

    def snapshot(self) -> TaskInfo:
        created_at = _utc(self.created)
        assert created_at is not None
        return TaskInfo(
            id=self.id,
            name=self.name,
            state=self.state,
            attempts=self.attempts,
            error=self.error,
            created_at=created_at,
            started_at=_utc(self.started),
            finished_at=_utc(self.finished),
            result=self.result,
            progress=self.progress,
            queue=self.queue,
        )


class TaskTable:
    """Records by id, with counts by state and bounded retention of finished ones."""

    def __init__(self, keep_finished: int, finished_ttl: float) -> None:
        self.keep_finished = keep_finished
        self.finished_ttl = finished_ttl
        self._records: dict[str, TaskRecord] = {}
        self._finished: deque[tuple[float, str]] = deque()
        self.counts: dict[TaskState, int] = dict.fromkeys(TaskState, 0)
        # Unfinished tasks: the runner is idle when this is 0.
        self.active = 0

    def add(self, task_id: str, name: str, created: float) -> TaskRecord:
        record = TaskRecord(task_id, name, created)
        self._records[task_id] = record
        self.counts[PENDING] += 1
        self.active += 1
        return record

    def get(self, task_id: str) -> TaskRecord | None:
        return self._records.get(task_id)

    def records(self) -> list[TaskRecord]:
        """Every record kept, unfinished and finished, in the order they were added."""
        return list(self._records.values())

    def unfinished(self) -> list[TaskRecord]:
        return [r for r in self._records.values() if r.state not in FINISHED]

    def live_by_queue(self) -> dict[str, dict[str, int]]:
        """Pending, scheduled and running tasks per queue."""
        counts: dict[str, dict[str, int]] = {}
        for record in self.unfinished():
            of_queue = counts.setdefault(record.queue, dict.fromkeys(UNFINISHED, 0))
            of_queue[record.state.value] += 1
        return counts

    def move(self, record: TaskRecord, state: TaskState) -> None:
        counts = self.counts
        counts[record.state] -= 1
        counts[state] += 1
        if state in FINISHED:
            now = time.time()
            record.finished = now
            self.active -= 1
            finished = self._finished
            finished.append((now, record.id))
            if len(finished) > self.keep_finished or finished[0][0] < now - self.finished_ttl:
                self._forget_old(now)
        # Set last, so a reader on another thread that sees a finished state
        # also sees its finish time.
        record.state = state

    def _forget_old(self, now: float) -> None:
        finished = self._finished
        horizon = now - self.finished_ttl
        while finished and (len(finished) > self.keep_finished or finished[0][0] < horizon):
            _, task_id = finished.popleft()
            self._records.pop(task_id, None)


def value_of(info: TaskInfo) -> Any:
    """A finished task's result; `TaskFailed` or `TaskCancelled` if it has none."""
    if info.state is SUCCEEDED:
        return info.result
    if info.state is CANCELLED:
        raise TaskCancelled(info)
    raise TaskFailed(info)
