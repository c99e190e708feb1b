"""The states of the store contract: what a store keeps (`StoredState`), and the one
mapping to what a reader is shown (`shown_state`, a `backbeat.status.TaskState`)."""

from __future__ import annotations

from enum import StrEnum

from backbeat.status import TaskState


class StoredState(StrEnum):
    """The state a store keeps a task in (what a reader is shown: `shown_state`)."""

    HELD = "held"  # written ahead of a response: runnable once activated, or past its hold
    PENDING = "pending"  # runnable from `due_at` on
    RUNNING = "running"  # leased to a worker
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # the dead letter: kept with its error and traceback until retried or purged
    CANCELLED = "cancelled"


# The stored states of an unfinished task (an idempotency key is taken while its task is in
# one of them). The finished ones are `backbeat.status.FINISHED`, the same strings.
LIVE = (StoredState.HELD.value, StoredState.PENDING.value, StoredState.RUNNING.value)


def shown_state(state: str, due_at: float, now: float) -> TaskState:
    """What a reader is shown of a task stored in `state`: a held task is pending, and a
    pending one whose `due_at` is still ahead is scheduled. The one such mapping: stores
    answer in the shown states (counts, lists, searches) through it; the Redis script, which
    must count and filter atomically, mirrors it."""
    if state == StoredState.PENDING or state == StoredState.HELD:
        return TaskState.SCHEDULED if due_at > now else TaskState.PENDING
    return TaskState(state)
