"""The in-process feeder: tasks as live Python objects, run by this process, no store.

What it does that a store cannot: a task runs in a copy of the context it was
made in (request ids reach it), closures and lambdas are fine, and handing a
task over costs no await (`take`), which keeps the hand-off within a small
factor of a bare ``asyncio.create_task``. It keeps each task's status in a
bounded in-memory table (`backbeat.status.TaskTable`), so status is per process.

Limits: at most ``concurrency`` attempts at once, ``max_pending`` waiting;
a sequence's members start one after another, a group's independently; delays
and retries wait on the loop's timers; the drain gives what is left
``shutdown_timeout`` seconds, then cancels it and logs each task as lost.

The verbs of the `Engine` protocol that only mean something with a store do here
what a caller would expect of a runner without one: registering names and storing a
request's tasks ahead of its response do nothing (there is nothing to store), the
worker's health and a stored row are None, the store is connected at once; writing
ahead (`prepare`), leaving execution to workers, choosing queues and running
schedules raise an error that names the missing store.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backbeat.engine.execution import Hooks, Outcome, run_attempt
from backbeat.engine.health import WorkerHealth
from backbeat.engine.jobs import Collection, Job, run_eagerly, start_collection
from backbeat.engine.limits import Limits
from backbeat.engine.round_trip import as_stored
from backbeat.engine.slot_queue import SlotQueue
from backbeat.ids import new_id
from backbeat.logs import log_failure, log_lost
from backbeat.registry import durable_name
from backbeat.schedules import Schedule
from backbeat.serialization import ArgumentError
from backbeat.status import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    TaskInfo,
    TaskRecord,
    TaskState,
    TaskTable,
)
from backbeat.stores.base import StoredStatus
from backbeat.tasks import BackgroundTask, BackgroundTasks, RequestTasks, current_runner

if TYPE_CHECKING:
    from backbeat.engine.protocol import OnCommit
    from backbeat.engine.stored import Prepared

logger = logging.getLogger("backbeat")


class RunnerFull(Exception):
    """`Runner.submit` was called while ``max_pending`` tasks were already waiting."""


class GatesNeedAStore(ValueError):
    """A task with a rate limit or a concurrency key was handed to a runner without a store."""


def refuse_gates(task: object) -> None:
    """Rate limits and per-key concurrency are kept by a store, across processes: a runner
    without one refuses such tasks (GatesNeedAStore) rather than run them unlimited."""
    if isinstance(task, BackgroundTasks):
        for member in task.tasks:
            refuse_gates(member)
        return
    policy = getattr(task, "policy", None)
    if policy is not None and policy.gated:
        raise GatesNeedAStore(
            f"task {getattr(task, 'name', task)!r} has a rate_limit, concurrency_key or "
            "max_concurrency: these are kept by a store across every worker, and this runner "
            "has none; give it one (Runner(store='sqlite:///tasks.db') keeps them on one host)"
        )


class LocalEngine:
    """Runs live task objects in this process, with limits, policy and status."""

    durable = False
    store = None
    registry = None
    status_poll = 0.005  # a look at the table costs a dict lookup

    def __init__(
        self, limits: Limits, hooks: Hooks, *, eager: bool = False, round_trip: bool = False
    ) -> None:
        self.limits = limits
        self.hooks = hooks
        self.eager = eager
        # A runner for tests (eager, or handing arguments through JSON as a store would) runs
        # tasks with limits as if under them; any other refuses them (`refuse_gates`).
        self.keeps_no_limits = not (eager or round_trip)
        self.schedules: list[Schedule] = []
        self._table = TaskTable(limits.keep_finished, limits.finished_ttl)
        self._loop: asyncio.AbstractEventLoop | None = None
        self.accepting = False
        self._running = 0
        self._slot_queue = SlotQueue()
        self._timers: set[Job] = set()
        self._executions: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._room_waiters = 0
        self._warned: set[str] = set()
        # Unfinished jobs by id, so that one can be cancelled; and those being cancelled.
        self._jobs: dict[str, Job] = {}
        self._cancelling: set[str] = set()
        self._keys: dict[str, str] = {}  # idempotency key -> id, of unfinished tasks

    # --- lifecycle -------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop is not None:
            raise RuntimeError("this Runner is already started")
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        if self._table.active == 0:
            self._idle.set()
        self.accepting = True

    async def drain(self) -> None:
        """Stop taking tasks; give the others `shutdown_timeout` s; cancel and log the rest."""
        if self._loop is None:
            return
        self.accepting = False
        shutdown_timeout = self.limits.shutdown_timeout
        if self._table.active:
            assert self._idle is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), shutdown_timeout)
        for job in self._timers:
            assert job.timer is not None
            job.timer.cancel()
        self._timers.clear()
        self._slot_queue.clear()
        self._jobs.clear()
        self._keys.clear()
        for execution in self._executions:
            execution.cancel()
        if self._executions:
            await asyncio.gather(*self._executions, return_exceptions=True)
        log_lost(self._cancel_unfinished(), shutdown_timeout)
        self._loop = None

    async def wait_connected(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        return True  # no store to wait for

    def gather_schedules(self, declared: list[Schedule]) -> None:
        """RuntimeError for the runner's own schedules (a store decides which process
        enqueues each tick); a warning that those declared with @task(cron=...) do not run."""
        if self.schedules:
            raise RuntimeError(
                "runner.schedule needs a runner with a store, which decides which process "
                "enqueues each tick: Runner(store='sqlite:///tasks.db'), or "
                "store='memory://' for one process"
            )
        if declared:
            logger.warning(
                "backbeat: %d periodic task(s) (%s) are declared but this runner has no "
                "store: they do not run here (Runner(store=...))",
                len(declared),
                ", ".join(found.name for found in declared),
            )

    def check_schedule(self, schedule: Schedule) -> None:
        """Nothing now: `gather_schedules` refuses them all at start."""

    def schedule_added(self) -> None:
        """Nothing: no schedule runs here."""

    def _cancel_unfinished(self) -> list[tuple[TaskRecord, TaskState]]:
        """Cancel what the drain left unfinished; each task with the state it was in."""
        lost = [(record, record.state) for record in self._table.unfinished()]
        for record, was in lost:
            record.error = f"cancelled at shutdown while {was.value}"
            self._table.move(record, CANCELLED)
        return lost

    # --- names and writing ahead: nothing to store -------------------------------------

    @property
    def execute(self) -> bool:
        return True

    @execute.setter
    def execute(self, value: bool) -> None:
        raise ValueError("only a runner with a store can leave execution to workers")

    @property
    def queues(self) -> tuple[str, ...] | None:
        return None  # all: every task runs here

    @queues.setter
    def queues(self, value: tuple[str, ...] | None) -> None:
        raise ValueError("only a runner with a store has queues")

    def register(self, func: Callable[..., Any]) -> str:
        """The name a store would keep `func` under; TypeError where it has none."""
        return durable_name(func)

    def register_module(self, module: str) -> None:
        """Nothing: live objects need no names."""

    def register_tree(self, task: BackgroundTask) -> None:
        """Nothing: a task tree runs as live objects."""

    async def prepare(self, task: BackgroundTask) -> Prepared:
        raise RuntimeError("only a runner with a store writes tasks ahead of a response")

    async def prepare_collected(self, collector: RequestTasks) -> None:
        """Nothing: the request's tasks are taken when its response hands them over."""

    async def abandon_collected(self, collector: RequestTasks, reason: str) -> None:
        """Nothing: nothing was stored ahead."""

    # --- taking tasks ------------------------------------------------------------------

    def as_stored(self, task: BackgroundTask) -> BackgroundTask:
        """The task as a store would hand it to a worker (a runner that round-trips)."""
        try:
            return as_stored(task)
        except ArgumentError as exc:
            raise ArgumentError(
                f"{exc}: a store could not keep it, and this runner hands tasks their "
                "arguments as a store would (Runner(round_trip=...); TestClient(app, "
                "round_trip=False) for an app that never uses a store)"
            ) from None

    def submit(self, task: BackgroundTask, connection: object = None) -> str:
        """`connection`: refused (TypeError), as there is no store to write in it."""
        if connection is not None:
            raise TypeError(
                "connection= writes the task in your database transaction, which needs a "
                'runner whose store is in that database (Runner(store="postgresql://...")); '
                "this runner has no store"
            )
        if self.keeps_no_limits:
            refuse_gates(task)
        if not self.accepting:
            raise RuntimeError(
                "this Runner is not running: start it (`async with runner:`, or the app's lifespan)"
            )
        if self._waiting() >= self.limits.max_pending:
            raise RunnerFull(f"{self.limits.max_pending} tasks are already waiting (max_pending)")
        return self._accept(task, None)

    async def asubmit(self, task: BackgroundTask, connection: object = None) -> str:
        return self.submit(task, connection)

    def submit_on_commit(self, task: BackgroundTask, on_commit: OnCommit) -> str:
        """Refused (TypeError): the write it defers is a store's."""
        raise TypeError(
            "submit_on_commit writes the task to a store when your transaction commits; "
            'this runner has no store (Runner(store="..."))'
        )

    def take(self, task: BackgroundTask) -> bool:
        if self.keeps_no_limits and (task.policy.gated or isinstance(task, BackgroundTasks)):
            try:
                refuse_gates(task)
            except GatesNeedAStore as exc:
                log_failure(task.id, task.name, exc, queue=task.policy.queue)
                return True  # refused: logged, as a task that fails is, and never run
        if self.accepting and not self.eager and self._waiting() < self.limits.max_pending:
            self._accept(task, contextvars.copy_context())
            return True
        return False

    async def hand_off(self, task: BackgroundTask) -> None:
        if self.take(task):
            return
        token = current_runner.set(None)
        try:
            if self.eager:
                await run_eagerly(task, self._table, self.hooks)
            elif not self.accepting:
                self._warn_once("not-running", "the runner is not running")
                await task()
            elif await self._wait_for_room():
                self._accept(task, contextvars.copy_context())
            else:
                self._warn_once(
                    "overflow",
                    f"max_pending={self.limits.max_pending} tasks waited for over "
                    f"overflow_timeout={self.limits.overflow_timeout}s",
                )
                await task()
        finally:
            current_runner.reset(token)

    def _warn_once(self, key: str, reason: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            logger.warning(
                "backbeat: %s, so tasks run inline in the request, as without a runner "
                "(logged once)",
                reason,
            )

    async def _wait_for_room(self) -> bool:
        assert self._room is not None
        deadline = time.monotonic() + self.limits.overflow_timeout
        while self._waiting() >= self.limits.max_pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self.accepting:
                return False
            self._room.clear()
            self._room_waiters += 1
            try:
                await asyncio.wait_for(self._room.wait(), remaining)
            except TimeoutError:
                return False
            finally:
                self._room_waiters -= 1
        return self.accepting

    def _waiting(self) -> int:
        counts = self._table.counts
        return counts[PENDING] + counts[SCHEDULED]

    def _accept(self, task: BackgroundTask, caller: contextvars.Context | None) -> str:
        """Register and start a task tree; `caller` is the hand-off context, if any."""
        assert self._idle is not None
        key = task.policy.key
        if key is not None and key in self._keys:
            return self._keys[key]  # a live task has this key: nothing is added
        self._idle.clear()
        if type(task) is BackgroundTask and not task.policy.delay:
            # The common case, a single task ready to run, without the general planning.
            job = self._job(task, caller)
            if self._running < self.limits.concurrency:
                self._spawn(job)
            else:
                self._slot_queue.add(job)
            return job.record.id
        unit = self._plan(task, caller)
        self._start(unit, None)
        return unit.record.id if isinstance(unit, Job) else task.id

    def _plan(self, task: object, caller: contextvars.Context | None) -> Job | Collection:
        """Register every task in the tree, so each id has a status at once."""
        if isinstance(task, BackgroundTasks):
            return Collection(task.as_group, [self._plan(m, caller) for m in task.tasks])
        if not isinstance(task, BackgroundTask):
            task = BackgroundTask(task)  # type: ignore[arg-type]  # appended to .tasks by hand
        return self._job(task, None if caller is None else caller.copy())

    def _job(self, task: BackgroundTask, caller: contextvars.Context | None) -> Job:
        table = self._table
        if task.context is None or table.get(task.id) is not None:
            # A route's task (one object for every request) or a task handed over
            # again: this run is a new task, with its own id, created now.
            record = table.add(new_id(), task.name, time.time())
        else:
            record = table.add(task.id, task.name, task.created)
        # In a copy of the context the task was made in; a route's, in the hand-off's (a copy).
        if task.context is not None:
            context = task.context.copy()
        else:
            context = caller or contextvars.copy_context()
        job = self._jobs[record.id] = Job(task, record, context)
        policy = task.policy
        if policy.queue != "default":
            record.queue = policy.queue
        if policy.key is not None:
            self._keys[policy.key] = record.id
        return job

    def _start(self, unit: Job | Collection, on_done: Callable[[], None] | None) -> None:
        if isinstance(unit, Job):
            unit.on_done = on_done
            if unit.record.state is CANCELLED:  # cancelled while it waited for its turn
                self._done(unit)
                return
            delay = unit.task.policy.delay
            wait = (unit.record.created + delay - time.time()) if delay else 0.0
            if wait > 0:
                self._schedule(unit, wait)
            else:
                self._ready(unit)
            return
        start_collection(unit, on_done, self._start)

    def _schedule(self, job: Job, wait: float) -> None:
        assert self._loop is not None
        if job.record.state is not SCHEDULED:
            self._table.move(job.record, SCHEDULED)
        job.timer = self._loop.call_later(wait, self._wake, job)
        self._timers.add(job)

    def _wake(self, job: Job) -> None:
        self._timers.discard(job)
        job.timer = None
        self._ready(job)

    def _ready(self, job: Job) -> None:
        if job.record.state is not PENDING:
            self._table.move(job.record, PENDING)
        if self._running < self.limits.concurrency:
            self._spawn(job)
        else:
            self._slot_queue.add(job)

    def _spawn(self, job: Job) -> None:
        assert self._loop is not None
        self._running += 1
        execution = self._loop.create_task(self._execute(job), context=job.context)
        job.execution = execution
        self._executions.add(execution)

    # --- running -------------------------------------------------------------------------

    async def _execute(self, job: Job) -> None:
        # Inside the runner, `await other_task()` runs inline rather than handing off again.
        if current_runner.get() is not None:
            current_runner.set(None)
        task, record = job.task, job.record
        record.attempts += 1
        record.started = time.time()
        self._table.move(record, RUNNING)
        if self._room_waiters:
            self._room_made()
        try:
            outcome = await run_attempt(
                job,
                task.func,
                task.args,
                task.kwargs,
                self.hooks,
                self._record,
                # The record's method: the job's context holding the job would be a cycle.
                reporter=record.report,
            )
        except asyncio.CancelledError:
            self._running -= 1
            self._executions.discard(job.execution)
            if record.id not in self._cancelling:
                raise  # the drain cancelled us; it records and logs the loss
            self._cancelling.discard(record.id)
            self._table.move(record, CANCELLED)
            self._done(job)
            if self._slot_queue:
                self._fill_slots()
            return
        if outcome.state is not SCHEDULED:
            self._done(job)
        if self._slot_queue:
            self._fill_slots()

    def _record(self, job: Job, outcome: Outcome) -> None:
        self._running -= 1
        self._executions.discard(job.execution)
        if outcome.state is SUCCEEDED:
            job.record.result = outcome.result
            self._table.move(job.record, SUCCEEDED)
        elif outcome.state is SCHEDULED:
            assert outcome.retry_in is not None
            self._schedule(job, outcome.retry_in)
        else:
            self._table.move(job.record, FAILED)

    def _done(self, job: Job) -> None:
        self._jobs.pop(job.record.id, None)
        if job.task.policy.key is not None:
            self._keys.pop(job.task.policy.key, None)
        if job.on_done is not None:
            job.on_done()
        if self._table.active == 0 and self._idle is not None:
            self._idle.set()

    def _fill_slots(self) -> None:
        queue = self._slot_queue
        while queue and self._running < self.limits.concurrency:
            self._spawn(queue.pop())

    def _room_made(self) -> None:
        if self._waiting() < self.limits.max_pending:
            assert self._room is not None
            self._room.set()

    async def acancel(self, task_id: str, reason: str) -> bool:
        return self.cancel(task_id, reason)

    def cancel(self, task_id: str, reason: str) -> bool:
        """Cancel a task that has not finished: it never starts, or (running) is cancelled."""
        job = self._jobs.get(task_id)
        record = self._table.get(task_id)
        if job is None or record is None or record.state is CANCELLED:
            return False
        record.error = reason
        if record.state is RUNNING:
            assert job.execution is not None
            self._cancelling.add(task_id)
            job.execution.cancel()
            return True
        if job.timer is not None:  # waiting for its delay or its retry
            job.timer.cancel()
            job.timer = None
            self._timers.discard(job)
        if self._slot_queue.remove(job):  # waiting for a free slot
            started = True
        else:  # a sequence's member, waiting for its turn (or for its timer, above)
            started = job.on_done is not None or record.state is SCHEDULED
        self._table.move(record, CANCELLED)
        if started:
            self._done(job)
        return True

    # --- looking -------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo | None:
        record = self._table.get(task_id)
        return None if record is None else record.snapshot()

    async def aget(self, task_id: str) -> TaskInfo | None:
        return self.get(task_id)

    def stored(self, task_id: str) -> StoredStatus | None:
        return None  # no store keeps it

    def tasks(self) -> list[TaskInfo]:
        """Every task the table keeps, oldest first."""
        return [record.snapshot() for record in self._table.records()]

    def health(self) -> WorkerHealth | None:
        return None  # no worker: tasks run as the loop takes them

    def stats(self) -> dict[str, int]:
        return {state.value: count for state, count in self._table.counts.items()}

    async def queue_stats(self) -> dict[str, dict[str, int]]:
        return self._table.live_by_queue()

    async def join(self, timeout: float | None) -> None:  # noqa: ASYNC109 - the runner's API
        if self._table.active == 0:
            return
        if self._idle is None or self._loop is None:
            raise RuntimeError("this Runner is not running")
        await asyncio.wait_for(self._idle.wait(), timeout)
