"""What `Store.fire_schedule` does about one tick, decided once for the stores that decide
in Python (memory, SQLite, PostgreSQL; Redis decides in its script's `fire` step, the same
way): a pure function of the schedule's record as the store holds it in its atomic step.

`backbeat.schedules.plan` chose before which ticks to enqueue and which to skip (missed,
late); what is left needs the store's record, read where no other process can change it:
whether another process handled the tick already, whether the schedule is paused, and
whether the previous tick's task still runs (``skip_if_running``). That last one is a
question only the store can answer, asked only when it decides something."""

from __future__ import annotations

from dataclasses import dataclass

from backbeat.stores.base import STILL_RUNNING, NewTask, ScheduleRecord


@dataclass(frozen=True, slots=True)
class TickDecision:
    """A tick no process handled yet: it becomes the schedule's latest tick, noted `note`,
    and `enqueue` (when there is one) is enqueued and becomes the schedule's last task.

    With `unless_running`, the id of the previous tick's task, the store looks that task up
    first: if it is still held, pending or running, the tick is skipped instead
    (`still_running`)."""

    note: str
    enqueue: NewTask | None = None
    unless_running: str | None = None

    def still_running(self) -> TickDecision:
        return TickDecision(STILL_RUNNING)


def decide_tick(
    found: ScheduleRecord, tick: int, task: NewTask | None, note: str, skip_if_running: bool
) -> TickDecision | None:
    """`Store.fire_schedule`'s decision, given the schedule's record `found`: None when
    `tick` was handled already (another process was first)."""
    if found.last_tick is not None and found.last_tick >= tick:
        return None
    if found.paused:
        return TickDecision("paused")
    if task is None:
        return TickDecision(note)
    if skip_if_running and found.last_task is not None:
        return TickDecision("enqueued", task, unless_running=found.last_task)
    return TickDecision("enqueued", task)
