"""The Redis store's rows: tasks, claims, statuses and schedules as `redis.lua` takes and
gives them (lists of strings, in the orders the script's steps use)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from backbeat.stores.base import (
    ClaimedTask,
    NewTask,
    ScheduleRecord,
    StoredStatus,
    after_json,
    receipt_for,
)
from backbeat.stores.inspection import AttemptRecord

# A call of one step of the script (`RedisStore._call`): the step's name, then its
# arguments; the script's reply.
Step = Callable[..., Awaitable[Any]]

# What `get` reads of a task's hash, in order.
STATUS_FIELDS = (
    "name",
    "state",
    "attempts",
    "error",
    "traceback",
    "created_at",
    "started_at",
    "finished_at",
    "due_at",
    "result",
    "progress",
    "queue",
    "payload",
    "worker",
    "priority",
)


def optional(value: str | None) -> str | None:
    return None if value is None or value == "" else value


def number(value: str | None) -> float | None:
    """A number field; None when it is empty or was made unreadable outside backbeat."""
    try:
        return None if value is None or value == "" else float(value)
    except ValueError:
        return None


def text(value: object) -> str:
    return "" if value is None else str(value)


def gate_fields(t: NewTask) -> list[str]:
    """A task's gate fields as the script's enqueue takes them ('' when not gated)."""
    line = t.line
    if line is None:
        return ["", "", "", "", "", ""]
    return [
        text(t.rate_gate),
        str(t.rate_limit),
        repr(t.rate_window),
        text(t.concurrency_gate),
        str(t.max_concurrency),
        line,
    ]


# What the script's claim returns for each task, in order (`take` in redis.lua).
CLAIMED_FIELDS = (
    "id",
    "name",
    "payload",
    "attempts",
    "created_at",
    "retries",
    "backoff",
    "max_backoff",
    "timeout",
    "lost",
    "error",
    "queue",
)


def new_row(t: NewTask) -> list[str]:
    """A new task as the script's `add_task` reads it: its id, then its fields as strings."""
    return [
        t.id,
        t.name,
        t.payload,
        str(t.retries),
        repr(t.backoff),
        repr(t.max_backoff),
        text(t.timeout),
        repr(t.created_at),
        repr(t.due_at),
        after_json(t.after) or "",
        text(t.held_until),
        t.queue,
        str(t.priority),
        text(t.key),
        *gate_fields(t),
    ]


def schedule_record(values: list[Any]) -> ScheduleRecord:
    name, rule, last_tick, last_task, note, paused, updated_at = (text(v) for v in values)
    return ScheduleRecord(
        name=name,
        rule=rule,
        last_tick=int(last_tick) if last_tick else None,
        last_task=optional(last_task),
        note=optional(note),
        paused=paused == "1",
        updated_at=number(updated_at) or 0.0,
    )


def claimed(row: list[str]) -> ClaimedTask:
    field = dict(zip(CLAIMED_FIELDS, row, strict=True))
    return ClaimedTask(
        id=field["id"],
        name=field["name"],
        payload=field["payload"],
        attempts=int(field["attempts"]),
        created_at=float(field["created_at"]),
        retries=int(field["retries"]),
        backoff=float(field["backoff"]),
        max_backoff=float(field["max_backoff"]),
        timeout=number(field["timeout"]),
        lost=int(field["lost"] or 0),
        error=optional(field["error"]),
        queue=field["queue"],
        receipt=receipt_for(field["id"], int(field["attempts"])),
    )


def status(task_id: str, values: list[str | None]) -> StoredStatus:
    field = dict(zip(STATUS_FIELDS, values, strict=True))
    name = field["name"]
    state = field["state"]
    assert name is not None and state is not None
    return StoredStatus(
        id=task_id,
        name=name,
        state=state,
        attempts=int(number(field["attempts"]) or 0),
        error=optional(field["error"]),
        traceback=optional(field["traceback"]),
        created_at=number(field["created_at"]) or 0.0,
        started_at=number(field["started_at"]),
        finished_at=number(field["finished_at"]),
        due_at=number(field["due_at"]) or 0.0,
        result=optional(field["result"]),
        progress=optional(field["progress"]),
        queue=field["queue"] or "default",
        payload=optional(field["payload"]),
        worker=optional(field["worker"]),
        priority=int(number(field["priority"]) or 0),
    )


def attempt_record(fields: list[str]) -> AttemptRecord:
    """An attempt as the script keeps it (`log_attempt`: strings, '' for none)."""
    number, worker, started, finished, outcome, error, traceback = fields
    return AttemptRecord(
        number=int(number or 0),
        worker=worker or None,
        started_at=float(started) if started else None,
        finished_at=float(finished or 0),
        outcome=outcome,
        error=error or None,
        traceback=traceback or None,
    )
