"""Rows for the store tests: tasks to enqueue, outcomes to settle."""

import time

from backbeat.ids import new_id
from backbeat.status import TaskState
from backbeat.stores import NewTask
from backbeat.stores.base import ClaimedTask, Settlement


def new_task(name: str = "emails.send", due_in: float = 0.0, **policy) -> NewTask:
    now = time.time()
    return NewTask(
        id=new_id(),
        name=name,
        payload='{"args": ["hi"], "kwargs": {}}',
        created_at=now,
        due_at=now + due_in,
        **policy,
    )


def succeeded(claim: ClaimedTask, result: str | None = None) -> Settlement:
    return Settlement(claim.receipt, TaskState.SUCCEEDED, result=result)


def failed(
    claim: ClaimedTask, error: str = "boom", trace: str | None = None, retry_at: float | None = None
) -> Settlement:
    state = TaskState.FAILED if retry_at is None else TaskState.SCHEDULED
    return Settlement(claim.receipt, state, error=error, traceback=trace, retry_at=retry_at)
