"""The supervised runner: tasks leave the request and run under one app-wide supervisor.

A `Runner` lives in the ASGI lifespan (or in ``async with runner:``). Tasks
handed to it run in their own asyncio tasks with:

* at most ``concurrency`` running at once, at most ``max_pending`` waiting;
* each task's policy (`@task(...)`, `.using(...)`): retries with jittered
  exponential backoff, a timeout per attempt, a delay before the first;
* a status per task id (`get`, `aget`), counts (`stats`), hooks, `join`;
* a drain on shutdown: no new tasks, ``shutdown_timeout`` seconds for the
  running and waiting ones, then whatever is left is cancelled and logged.

Sequences keep their order: the members of a `BackgroundTasks` without
``as_group`` start one after another; a group's members are independent.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from starlette.background import BackgroundTask as StarletteBackgroundTask

from backbeat.durable import DurableEngine
from backbeat.ids import new_id
from backbeat.registry import durable_name
from backbeat.status import (
    CANCELLED,
    FAILED,
    PENDING,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    TaskInfo,
    TaskRecord,
    TaskTable,
)
from backbeat.stores import Store, open_store
from backbeat.tasks import (
    BackgroundTask,
    BackgroundTasks,
    RequestTasks,
    current_runner,
    log_failure,
    request_tasks,
)

if TYPE_CHECKING:
    from backbeat.routing import HandlerRoute
    from backbeat.status_routes import Auth

logger = logging.getLogger("backbeat")

Hook = Callable[..., Any]


def find_runner(app: Any) -> Runner | None:
    """The runner of an `App` or of a `BackbeatMiddleware` (also nested in middleware)."""
    seen = 0
    while app is not None and seen < 64:
        runner = getattr(app, "runner", None)
        if isinstance(runner, Runner):
            return runner
        app = getattr(app, "app", None)
        seen += 1
    return None


class RunnerFull(Exception):
    """`Runner.submit` was called while ``max_pending`` tasks were already waiting."""


class _Job:
    """One task's place in the runner: its record and what to do when it is done."""

    __slots__ = ("context", "execution", "on_done", "record", "task", "timer")

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


class _Collection:
    __slots__ = ("as_group", "members")

    def __init__(self, as_group: bool, members: list[_Job | _Collection]) -> None:
        self.as_group = as_group
        self.members = members


class Runner:
    """Runs handed-over tasks with limits, retries, timeouts and status; drains on shutdown."""

    def __init__(
        self,
        *,
        concurrency: int = 100,
        max_pending: int = 10_000,
        shutdown_timeout: float = 30.0,
        overflow_timeout: float = 10.0,
        keep_finished: int = 10_000,
        finished_ttl: float = 3600.0,
        eager: bool = False,
        store: str | Store | None = None,
        execute: bool = True,
        lease: float = 30.0,
        poll_interval: float = 1.0,
        max_lost_leases: int = 3,
        max_task_size: int = 1 << 20,
        on_start: Hook | None = None,
        on_success: Hook | None = None,
        on_error: Hook | None = None,
        on_retry: Hook | None = None,
    ) -> None:
        for name, value in (
            ("concurrency", concurrency),
            ("max_pending", max_pending),
            ("keep_finished", keep_finished),
            ("max_lost_leases", max_lost_leases),
            ("max_task_size", max_task_size),
        ):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"Runner({name}=...) must be an int >= 1, got {value!r}")
        for name, number in (
            ("shutdown_timeout", shutdown_timeout),
            ("overflow_timeout", overflow_timeout),
            ("finished_ttl", finished_ttl),
            ("lease", lease),
            ("poll_interval", poll_interval),
        ):
            if not isinstance(number, int | float) or isinstance(number, bool) or number < 0:
                raise ValueError(f"Runner({name}=...) must be a number >= 0, got {number!r}")
        self.concurrency = concurrency
        self.max_pending = max_pending
        self.finished_ttl = float(finished_ttl)
        self.shutdown_timeout = float(shutdown_timeout)
        self.overflow_timeout = float(overflow_timeout)
        self.eager = eager
        self.on_start = on_start
        self.on_success = on_success
        self.on_error = on_error
        self.on_retry = on_retry
        self._table = TaskTable(keep_finished, finished_ttl)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._accepting = False
        self._running = 0
        self._queue: deque[_Job] = deque()
        self._timers: set[_Job] = set()
        self._executions: set[asyncio.Task[None]] = set()
        self._idle: asyncio.Event | None = None
        self._room: asyncio.Event | None = None
        self._room_waiters = 0
        self._warned: set[str] = set()
        self._failure_listeners: list[Callable[[TaskInfo, BaseException], None]] = []
        # With a store, the durable engine does the work; without, the code below.
        self._durable: DurableEngine | None = None
        if store is not None:
            opened = open_store(store) if isinstance(store, str) else store
            self._durable = DurableEngine(
                self,
                opened,
                execute=execute,
                lease=float(lease),
                poll_interval=float(poll_interval),
                max_lost_leases=max_lost_leases,
                max_task_size=max_task_size,
            )

    @property
    def durable(self) -> bool:
        """True when tasks are kept in a store."""
        return self._durable is not None

    @property
    def executes(self) -> bool:
        """Whether this process runs the tasks (False: it only writes them, workers run them)."""
        return self._durable.execute if self._durable is not None else True

    @executes.setter
    def executes(self, value: bool) -> None:
        if self._durable is None:
            raise ValueError("only a runner with a store can leave execution to workers")
        self._durable.execute = value

    @property
    def store(self) -> Store | None:
        return None if self._durable is None else self._durable.store

    def register(self, func: Callable[..., Any]) -> str:
        """Let this runner (and workers loading this app) run `func` by name.

        Needed for durable tasks whose functions are neither `@task` nor a route's
        ``background=``; raises TypeError for what cannot be found by name.
        """
        if self._durable is not None:
            return self._durable.register(func)
        return durable_name(func)

    def register_module(self, module: str) -> None:
        """Let this runner run the plain module-level functions of `module` by name.

        `App` and `BackbeatMiddleware` do it for the modules of their route handlers.
        """
        if self._durable is not None:
            self._durable.registry.add_module(module)

    def register_tasks(self, task: BackgroundTask) -> None:
        """Register every function in a task tree (a route's ``background=``)."""
        if self._durable is not None:
            self._durable.register_tree(task)

    async def prepare(self, task: BackgroundTask) -> StarletteBackgroundTask:
        """Write a request's tasks before its response starts (durable runners only)."""
        if self._durable is None or self.eager:
            return task
        return await self._durable.prepare(task)

    async def prepare_collected(self, collector: RequestTasks) -> None:
        """Store a request's tasks before its response starts (`BackbeatMiddleware`)."""
        if self._durable is not None and not self.eager:
            await self._durable.prepare_collected(collector)

    async def abandon_collected(self, collector: RequestTasks, reason: str) -> None:
        if self._durable is not None:
            await self._durable.abandon_collected(collector, reason)

    # --- lifecycle -------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True between `start()` and the end of `drain()`'s accepting phase."""
        return self._accepting

    async def start(self) -> None:
        if self._loop is not None:
            raise RuntimeError("this Runner is already started")
        self._loop = asyncio.get_running_loop()
        self._idle = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        if self._table.active == 0:
            self._idle.set()
        self._accepting = True
        if self._durable is not None:
            await self._durable.start()

    async def drain(self) -> None:
        """Stop taking tasks; give the others `shutdown_timeout` s; cancel and log the rest."""
        if self._loop is None:
            return
        self._accepting = False
        if self._durable is not None:
            await self._durable.drain()
        if self._table.active:
            assert self._idle is not None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._idle.wait(), self.shutdown_timeout)
        for job in self._timers:
            assert job.timer is not None
            job.timer.cancel()
        self._timers.clear()
        self._queue.clear()
        for execution in self._executions:
            execution.cancel()
        if self._executions:
            await asyncio.gather(*self._executions, return_exceptions=True)
        lost = self._table.unfinished()
        for record in lost:
            was = record.state
            record.error = f"cancelled at shutdown while {was.value}"
            self._table.move(record, CANCELLED)
            logger.error("Task %r (id %s) lost at shutdown: it was %s", record.name, record.id, was)
        if lost:
            logger.error(
                "backbeat runner: %d task(s) not finished within shutdown_timeout=%.1fs were "
                "cancelled and lost (this runner has no store)",
                len(lost),
                self.shutdown_timeout,
            )
        self._loop = None

    async def __aenter__(self) -> Runner:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.drain()

    # --- taking tasks ------------------------------------------------------------------

    def submit(self, task: BackgroundTask) -> str:
        """Take a task (or a `BackgroundTasks`) now; returns the id its status is kept under.

        That is the task's own id, except for a task object already handed over
        (or a route's task): each run of it gets a new id.

        Raises `RunnerFull` when ``max_pending`` tasks are waiting, and
        RuntimeError when the runner is not running. Call it on the runner's loop.

        With a store, from code that has no event loop running (a script, a cron
        job, a Django view): the task is written to the store before this returns,
        for the app's processes or ``backbeat worker`` to run; the runner need not
        be started. In async code, use ``await runner.asubmit(task)``.
        """
        if not isinstance(task, BackgroundTask):
            raise TypeError(f"Runner.submit expects a BackgroundTask, got {task!r}")
        if self._durable is not None:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                return asyncio.run(self.asubmit(task))
            raise RuntimeError(
                "a durable runner writes to its store, which takes an await here: use "
                "`await runner.asubmit(task)` in async code"
            )
        if not self._accepting:
            raise RuntimeError(
                "this Runner is not running: start it with `async with runner:` or the "
                "app's lifespan"
            )
        if self._waiting() >= self.max_pending:
            raise RunnerFull(f"{self.max_pending} tasks are already waiting (max_pending)")
        return self._accept(task, None)

    def take(self, task: BackgroundTask) -> bool:
        """What `await task()` does first inside a request served under this runner:
        take the task if there is room (no await on this path). False: call `hand_off`."""
        if (
            self._accepting
            and not self.eager
            and self._durable is None
            and self._waiting() < self.max_pending
        ):
            self._accept(task, contextvars.copy_context())
            return True
        return False

    async def asubmit(self, task: BackgroundTask) -> str:
        """`submit` for any runner; with a store, returns once the task is written."""
        if self._durable is None:
            return self.submit(task)
        if not isinstance(task, BackgroundTask):
            raise TypeError(f"Runner.asubmit expects a BackgroundTask, got {task!r}")
        ids = await self._durable.write(task, contextvars.copy_context())
        return ids[0] if len(ids) == 1 else task.id

    async def hand_off(self, task: BackgroundTask) -> None:
        """Take the task, or wait for room, or run it inline; eager mode runs it here."""
        if self.take(task):
            return
        if self._durable is not None and not self.eager:
            collector = request_tasks.get()
            if collector is not None:
                if collector.refused:
                    return  # they could not be stored and the client was told so
                prepared = collector.prepared.pop(id(task), None)
                if prepared is not None:
                    await prepared()  # stored ahead of the response: make them runnable
                    return
            # Durable: the write is the hand-off, whether or not this process executes.
            await self._durable.write(task, contextvars.copy_context())
            return
        token = current_runner.set(None)
        try:
            if self.eager:
                await self._run_eagerly(task)
            elif not self._accepting:
                self._warn_once("not-running", "the runner is not running")
                await task()
            elif await self._wait_for_room():
                self._accept(task, contextvars.copy_context())
            else:
                self._warn_once(
                    "overflow",
                    f"max_pending={self.max_pending} tasks waited for over "
                    f"overflow_timeout={self.overflow_timeout}s",
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
        deadline = time.monotonic() + self.overflow_timeout
        while self._waiting() >= self.max_pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not self._accepting:
                return False
            self._room.clear()
            self._room_waiters += 1
            try:
                await asyncio.wait_for(self._room.wait(), remaining)
            except TimeoutError:
                return False
            finally:
                self._room_waiters -= 1
        return self._accepting

    def _waiting(self) -> int:
        counts = self._table.counts
        return counts[PENDING] + counts[SCHEDULED]

    def _accept(self, task: BackgroundTask, caller: contextvars.Context | None) -> str:
        """Register and start a task tree; `caller` is the hand-off context, if any."""
        assert self._idle is not None
        self._idle.clear()
        if type(task) is BackgroundTask and not task.policy.delay:
            # The common case, a single task ready to run, without the general planning.
            job = self._job(task, caller)
            if self._running < self.concurrency:
                self._spawn(job)
            else:
                self._queue.append(job)
            return job.record.id
        unit = self._plan(task, caller)
        self._start(unit, None)
        return unit.record.id if isinstance(unit, _Job) else task.id

    def _plan(self, task: object, caller: contextvars.Context | None) -> _Job | _Collection:
        """Register every task in the tree, so each id has a status at once."""
        if isinstance(task, BackgroundTasks):
            return _Collection(task.as_group, [self._plan(m, caller) for m in task.tasks])
        if not isinstance(task, BackgroundTask):
            task = BackgroundTask(task)  # type: ignore[arg-type]  # appended to .tasks by hand
        return self._job(task, caller)

    def _job(self, task: BackgroundTask, caller: contextvars.Context | None) -> _Job:
        table = self._table
        if task.context is None or table.get(task.id) is not None:
            # A route's task (one object for every request) or a task handed over
            # again: this run is a new task, with its own id, created now.
            record = table.add(new_id(), task.name, time.time())
        else:
            record = table.add(task.id, task.name, task.created)
        # A route's task runs in the context of the request that handed it over.
        source = task.context or caller
        context = source.copy() if source is not None else contextvars.copy_context()
        return _Job(task, record, context)

    def _start(self, unit: _Job | _Collection, on_done: Callable[[], None] | None) -> None:
        if isinstance(unit, _Job):
            unit.on_done = on_done
            delay = unit.task.policy.delay
            wait = (unit.record.created + delay - time.time()) if delay else 0.0
            if wait > 0:
                self._schedule(unit, wait)
            else:
                self._ready(unit)
            return
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
                self._start(member, member_done)
        else:
            following = iter(members)

            def start_next() -> None:
                member = next(following, None)
                if member is not None:
                    self._start(member, start_next)
                elif on_done is not None:
                    on_done()

            start_next()

    def _schedule(self, job: _Job, wait: float) -> None:
        assert self._loop is not None
        if job.record.state is not SCHEDULED:
            self._table.move(job.record, SCHEDULED)
        job.timer = self._loop.call_later(wait, self._wake, job)
        self._timers.add(job)

    def _wake(self, job: _Job) -> None:
        self._timers.discard(job)
        job.timer = None
        self._ready(job)

    def _ready(self, job: _Job) -> None:
        if job.record.state is not PENDING:
            self._table.move(job.record, PENDING)
        if self._running < self.concurrency:
            self._spawn(job)
        else:
            self._queue.append(job)

    def _spawn(self, job: _Job) -> None:
        assert self._loop is not None
        self._running += 1
        execution = self._loop.create_task(self._execute(job), context=job.context)
        job.execution = execution
        self._executions.add(execution)

    # --- running -------------------------------------------------------------------------

    async def _execute(self, job: _Job) -> None:
        # Inside the runner, `await other_task()` runs inline rather than handing off again.
        if current_runner.get() is not None:
            current_runner.set(None)
        task, record, policy = job.task, job.record, job.task.policy
        table = self._table
        record.attempts += 1
        record.started = time.time()
        table.move(record, RUNNING)
        if self._room_waiters:
            self._room_made()
        failure: BaseException | None = None
        try:
            if self.on_start is not None:
                await self._hook(self.on_start, record.snapshot())
            if policy.timeout is None:
                await task.func(*task.args, **task.kwargs)
            else:
                async with asyncio.timeout(policy.timeout) as deadline:
                    await task.func(*task.args, **task.kwargs)
        except asyncio.CancelledError as exc:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                self._running -= 1
                self._executions.discard(job.execution)
                raise  # the drain cancelled us; it records and logs the loss
            failure = exc  # the task raised CancelledError on its own: a failure
        except Exception as exc:
            failure = exc
            if policy.timeout is not None and isinstance(exc, TimeoutError) and deadline.expired():
                failure = TimeoutError(f"timed out after {policy.timeout:g}s")
                failure.__cause__ = exc
        self._running -= 1
        self._executions.discard(job.execution)
        if failure is None:
            table.move(record, SUCCEEDED)
            if self.on_success is not None:
                await self._hook(self.on_success, record.snapshot())
            self._done(job)
        else:
            await self._attempt_failed(job, failure)
        if self._queue:
            self._fill_slots()

    async def _attempt_failed(self, job: _Job, exc: BaseException) -> None:
        record, policy = job.record, job.task.policy
        record.error = f"{type(exc).__name__}: {exc}"
        if self.on_error is not None:
            await self._hook(self.on_error, record.snapshot(), exc)
        if record.attempts <= policy.retries:
            wait = policy.retry_delay(record.attempts)
            logger.warning(
                "Background task %r (id %s) attempt %d of %d failed (%s); retrying in %.2fs",
                record.name,
                record.id,
                record.attempts,
                policy.retries + 1,
                record.error,
                wait,
            )
            self._schedule(job, wait)
            if self.on_retry is not None:
                await self._hook(self.on_retry, record.snapshot(), exc)
            return
        self._table.move(record, FAILED)
        log_failure(job.task, exc, attempts=record.attempts)
        self.report_failure(record.snapshot(), exc)
        self._done(job)

    def _done(self, job: _Job) -> None:
        if job.on_done is not None:
            job.on_done()
        if self._table.active == 0 and self._idle is not None:
            self._idle.set()

    def _fill_slots(self) -> None:
        queue = self._queue
        while queue and self._running < self.concurrency:
            self._spawn(queue.popleft())

    def _room_made(self) -> None:
        if self._waiting() < self.max_pending:
            assert self._room is not None
            self._room.set()

    def add_failure_listener(self, listener: Callable[[TaskInfo, BaseException], None]) -> None:
        """Call `listener(info, exc)` for every task that failed for good (`TestClient` uses it)."""
        self._failure_listeners.append(listener)

    def remove_failure_listener(self, listener: Callable[[TaskInfo, BaseException], None]) -> None:
        with contextlib.suppress(ValueError):
            self._failure_listeners.remove(listener)

    def report_failure(self, info: TaskInfo, exc: BaseException) -> None:
        for listener in self._failure_listeners:
            listener(info, exc)

    async def _hook(self, hook: Hook, *args: Any) -> None:
        try:
            result = hook(*args)
            if inspect.isawaitable(result):
                await result
        except Exception:
            logger.exception("backbeat runner hook %r failed", hook)

    async def _run_eagerly(self, task: BackgroundTask) -> None:
        """Eager mode (tests): run now, in order, retries without waiting; re-raise."""
        if isinstance(task, BackgroundTasks):
            for member in task.tasks:
                await self._run_eagerly(member)
            return
        record = self._table.add(
            task.id if self._table.get(task.id) is None else new_id(), task.name, task.created
        )
        policy = task.policy
        while True:
            record.attempts += 1
            record.started = time.time()
            self._table.move(record, RUNNING)
            try:
                if policy.timeout is None:
                    await task.run()
                else:
                    async with asyncio.timeout(policy.timeout):
                        await task.run()
            except Exception as exc:
                record.error = f"{type(exc).__name__}: {exc}"
                if record.attempts <= policy.retries:
                    self._table.move(record, SCHEDULED)
                    continue
                self._table.move(record, FAILED)
                raise
            self._table.move(record, SUCCEEDED)
            return

    # --- looking -------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo | None:
        """The status of a task by id, or None (unknown, or finished and forgotten).

        Safe to call from any thread.
        """
        if self._durable is not None:
            return self._durable.get(task_id)
        record = self._table.get(task_id)
        return None if record is None else record.snapshot()

    async def aget(self, task_id: str) -> TaskInfo | None:
        """`get` for handlers (stores that do I/O make this the one to use)."""
        if self._durable is not None:
            return await self._durable.aget(task_id)
        return self.get(task_id)

    def stats(self) -> dict[str, int]:
        """Counts by state: live for pending/scheduled/running, totals for finished states.

        With a store: the store's counts (finished tasks until they are purged).
        """
        if self._durable is not None:
            return self._durable.stats()
        return {state.value: count for state, count in self._table.counts.items()}

    async def join(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the brief's API
        """Wait until no task is pending, scheduled or running (TimeoutError after `timeout`).

        With a store: until the store has no such task, whichever process runs it.
        """
        if self._durable is not None:
            await self._durable.join(timeout)
            return
        if self._table.active == 0:
            return
        if self._idle is None or self._loop is None:
            raise RuntimeError("this Runner is not running")
        await asyncio.wait_for(self._idle.wait(), timeout)

    def status_route(
        self,
        path: str = "/tasks/{task_id}",
        *,
        name: str = "task_status",
        include_errors: bool = False,
        auth: Auth | None = None,
    ) -> HandlerRoute:
        """A GET route serving this runner's task status as JSON (see `backbeat.status_routes`).

        By default it shows id, state, attempts and timestamps; ``include_errors=True``
        adds the name and the error text; ``auth(request) -> bool`` guards it (403).
        """
        from backbeat.status_routes import status_route

        return status_route(self, path, name=name, include_errors=include_errors, auth=auth)
