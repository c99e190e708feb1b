"""A task as the memory store keeps it (`backbeat.stores.memory`): its row."""

from __future__ import annotations

from dataclasses import dataclass, field

from backbeat.stores.base import ClaimedTask, NewTask, StoredStatus, receipt_for
from backbeat.stores.inspection import ATTEMPTS_KEPT, AttemptRecord
from backbeat.stores.states import StoredState


@dataclass(slots=True)
class Row:
    task: NewTask
    state: StoredState
    attempts: int = 0
    started_at: float | None = None
    finished_at: float | None = None
    # Written ahead of a response: runnable once activated, or from this time on.
    held_until: float | None = None
    lease_until: float | None = None  # while running: the worker's lease
    worker: str | None = None
    error: str | None = None
    traceback: str | None = None
    lost: int = 0
    result: str | None = None
    cancel_requested: bool = False
    progress: str | None = None
    history: list[AttemptRecord] = field(default_factory=list)  # attempts that did not succeed

    def status(self) -> StoredStatus:
        task = self.task
        return StoredStatus(
            id=task.id,
            name=task.name,
            state=self.state,
            attempts=self.attempts,
            error=self.error,
            traceback=self.traceback,
            created_at=task.created_at,
            started_at=self.started_at,
            finished_at=self.finished_at,
            due_at=task.due_at,
            result=self.result,
            progress=self.progress,
            queue=task.queue,
            payload=task.payload,
            worker=self.worker,
            priority=task.priority,
        )

    def claimed(self) -> ClaimedTask:
        task = self.task
        return ClaimedTask(
            id=task.id,
            name=task.name,
            payload=task.payload,
            attempts=self.attempts,
            created_at=task.created_at,
            retries=task.retries,
            backoff=task.backoff,
            max_backoff=task.max_backoff,
            timeout=task.timeout,
            lost=self.lost,
            error=self.error,
            queue=task.queue,
            receipt=receipt_for(task.id, self.attempts),
        )

    def make_pending(self) -> None:
        """Runnable again (activated, released, retried), held by no worker."""
        self.state = StoredState.PENDING
        self.held_until = None
        self.lease_until = None
        self.worker = None

    def finish(self, state: StoredState, now: float) -> None:
        self.state = state
        self.finished_at = now
        self.held_until = None
        self.lease_until = None

    def ended(
        self,
        outcome: str,
        at: float,
        error: str | None = None,
        traceback: str | None = None,
    ) -> None:
        """The running attempt did not succeed: kept for `Store.attempts` (the latest few)."""
        record = AttemptRecord(
            self.attempts, self.worker, self.started_at, at, outcome, error, traceback
        )
        self.history.append(record)
        del self.history[:-ATTEMPTS_KEPT]
