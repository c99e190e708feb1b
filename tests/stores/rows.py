"""Rows for the store tests: tasks to enqueue, outcomes to settle, tasks in a given state."""

import time

from backbeat.ids import lowest_id, new_id
from backbeat.status import TaskState
from backbeat.stores import NewTask
from backbeat.stores.base import ClaimedTask, Settlement


def new_task(
    name: str = "emails.send", due_in: float = 0.0, payload: str | None = None, **policy
) -> NewTask:
    now = time.time()
    return NewTask(
        id=new_id(),
        name=name,
        payload=payload or '{"args": ["hi"], "kwargs": {}}',
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


async def make(
    store, state: str, *, error: str = "ValueError: boom", at: float | None = None, **fields
) -> str:
    """One task brought to `state` (as `TaskInfo` shows it, or "held"); returns its id.
    `at`: made as if created then.

    Running and finished ones are written ahead and started by id, so that no other
    task of the test is claimed instead."""
    if state == "pending":
        task = new_task(**fields)
    elif state == "scheduled":
        task = new_task(due_in=600, **fields)
    else:
        task = new_task(held_until=time.time() + 60, **fields)
    if at is not None:
        task.id = made_at(at)
    await store.enqueue([task])
    if state in ("running", "succeeded", "failed"):
        [claim] = await store.activate_and_claim("w", [task.id], 30, 1)
        if state == "succeeded":
            assert await store.finish([succeeded(claim, '"ok"')]) == [True]
        elif state == "failed":
            assert await store.finish([failed(claim, error, "Traceback ...")]) == [True]
    elif state == "cancelled":
        assert await store.cancel([task.id], "cancelled by a test") == 1
    return task.id


def made_at(at: float) -> str:
    """An id as made at that time (ids of one millisecond are in no particular order)."""
    return lowest_id(at)[:10] + new_id()[10:]
