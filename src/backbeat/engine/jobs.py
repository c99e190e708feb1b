"""A task's place in the in-process runner (`Job`), a collection's (`Collection`), and the
eager mode that runs a task tree right away (`run_eagerly`)."""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Callable

from backbeat.engine.execution import Hooks, Outcome, run_attempt
from backbeat.ids import new_id
from backbeat.policy import TaskPolicy
from backbeat.status import FAILED, RUNNING, SUCCEEDED, TaskRecord, TaskTable
from backbeat.tasks import BackgroundTask, BackgroundTasks


class Job:
    """One task's place in the runner: its record and what to do when it is done.

    It is also the attempt the executor runs (`engine.execution.AttemptLike`):
    the properties below read the record and the task's policy.
    """

    __slots__ = ("context", "execution", "on_done", "record", "task", "timer")
    lost = 0  # an in-process task's worker never dies under it alone
    carried = None  # it runs in a copy of the context it was handed over in: all is there

    def __init__(
        self, task: BackgroundTask, record: TaskRecord, context: contextvars.Context
    ) -> None:
        self.task = task
        self.record = record
        # A fresh copy per run: what the task sets stays in this run.
        self.context = context
        self.on_done: Callable[[], None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.execution: asyncio.Task[None] | None = None

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def name(self) -> str:
        return self.record.name

    @property
    def number(self) -> int:
        return self.record.attempts

    @property
    def created(self) -> float:
        return self.record.created

    @property
    def policy(self) -> TaskPolicy:
        return self.task.policy

    @property
    def queue(self) -> str:
        return self.task.policy.queue

    @property
    def error(self) -> str | None:
        return self.record.error

    @error.setter
    def error(self, value: str | None) -> None:
        self.record.error = value


class Collection:
    __slots__ = ("as_group", "members")

    def __init__(self, as_group: bool, members: list[Job | Collection]) -> None:
        self.as_group = as_group
        self.members = members


Start = Callable[["Job | Collection", "Callable[[], None] | None"], None]


def start_collection(unit: Collection, on_done: Callable[[], None] | None, start: Start) -> None:
    """Start a collection's members: a group's all at once, a sequence's one after another
    (the next when the previous is done, whatever its outcome); then call `on_done`."""
    members = unit.members
    if not members:
        if on_done is not None:
            on_done()
        return
    if unit.as_group:
        remaining = len(members)

        def member_done() -> None:
            nonlocal remaining
            remaining -= 1
            if remaining == 0 and on_done is not None:
                on_done()

        for member in members:
            start(member, member_done)
    else:
        following = iter(members)

        def start_next() -> None:
            member = next(following, None)
            if member is not None:
                start(member, start_next)
            elif on_done is not None:
                on_done()

        start_next()


async def run_eagerly(task: BackgroundTask, table: TaskTable, hooks: Hooks) -> None:
    """Eager mode (tests): run now, in order, retries without waiting; re-raise.

    The same attempt as ever (`engine.execution`), without the waits.
    """
    if isinstance(task, BackgroundTasks):
        for member in task.tasks:
            await run_eagerly(member, table, hooks)
        return
    record = table.add(task.id if table.get(task.id) is None else new_id(), task.name, task.created)
    job = Job(task, record, contextvars.copy_context())
    raised: list[BaseException] = []

    async def call() -> None:
        try:
            await task.run()
        except Exception as exc:
            raised.append(exc)  # the very exception, to re-raise to the test
            raise

    def record_outcome(job: Job, outcome: Outcome) -> None:
        record.result = outcome.result
        table.move(record, outcome.state)

    while True:
        record.attempts += 1
        record.started = time.time()
        table.move(record, RUNNING)
        outcome = await run_attempt(job, call, (), {}, hooks, record_outcome, wait_for_retry=False)
        if outcome.state is SUCCEEDED:
            return
        if outcome.state is FAILED:
            raise raised[-1] if raised else RuntimeError(outcome.error)
