"""`Runner`: where tasks go after the response, and what the app and the CLI talk to.

A `Runner` lives in the ASGI lifespan (or in ``async with runner:``). It is its
options, its lifecycle, and a façade over one engine (`backbeat.engine.protocol.Engine`),
chosen from its options and asked for everything without asking which it is:

* without a store, the in-process feeder (`backbeat.engine.local`): live task
  objects, run in this process, status in memory;
* with a store (``store="sqlite:///tasks.db"``), the stored feeder
  (`backbeat.engine.stored`): tasks written before the response, run by any
  process of the app under leases, status in the store.

Either way: at most ``concurrency`` tasks at once, each task's policy, status by
id, hooks, a drain with ``shutdown_timeout`` s of grace; one attempt code for both.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from backbeat.engine.execution import FailureListener, Hook, Hooks
from backbeat.engine.health import WorkerHealth
from backbeat.engine.limits import Limits, check_count, queue_names
from backbeat.engine.local import LocalEngine, RunnerFull
from backbeat.engine.protocol import Engine, OnCommit
from backbeat.engine.results import wait_for_result, wait_for_result_blocking
from backbeat.engine.schedule_list import ScheduleList
from backbeat.engine.stored import Prepared, StoredEngine
from backbeat.gates import queue_gates
from backbeat.observers import Observer
from backbeat.schedules import MissedTicks, Schedule
from backbeat.signing import signing_key as signing_key_of
from backbeat.status import TaskInfo
from backbeat.stores import Store, open_store
from backbeat.stores.base import StoredStatus
from backbeat.tasks import BackgroundTask, RequestTasks

__all__ = ["Runner", "RunnerFull"]


class Runner:
    """Runs handed-over tasks with limits, retries, timeouts and status; drains on shutdown.

    Any runner: ``concurrency``, ``shutdown_timeout``, ``finished_ttl``, the hooks.
    Without a store: ``max_pending``, ``overflow_timeout``, ``keep_finished``, ``eager``
    (tests: inline, re-raise; no store then), ``round_trip`` (tests: arguments through
    JSON and back, as a store would hand them to a worker; docs/testing.md). With one:
    ``execute``, ``lease``, ``poll_interval``, ``max_lost_leases``, ``max_task_size``,
    ``queues`` (this process runs; default all), ``signing_key`` (docs/durable.md,
    docs/redis.md), ``queue_rate_limits`` (``{"emails": "100/m"}``: a rate limit shared by
    the queue's tasks that have none of their own; docs/scheduling.md).
    """

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
        queues: list[str] | tuple[str, ...] | None = None,
        signing_key: str | bytes | None = None,
        queue_rate_limits: dict[str, str] | None = None,
        round_trip: bool = False,
        on_start: Hook | None = None,
        on_success: Hook | None = None,
        on_error: Hook | None = None,
        on_retry: Hook | None = None,
    ) -> None:
        self.limits = Limits.checked(
            concurrency=concurrency,
            max_pending=max_pending,
            shutdown_timeout=shutdown_timeout,
            overflow_timeout=overflow_timeout,
            keep_finished=keep_finished,
            finished_ttl=finished_ttl,
            max_lost_leases=max_lost_leases,
            max_task_size=max_task_size,
            lease=lease,
            poll_interval=poll_interval,
        )
        self.hooks = Hooks(on_start, on_success, on_error, on_retry)
        self.eager = eager
        # Without a store, hand tasks their arguments through JSON and back as a store
        # would (tests: `backbeat.testing.TestClient`, the pytest plugin's runners).
        self.round_trip = round_trip
        self._stored_engine = functools.partial(
            StoredEngine,
            limits=self.limits,
            hooks=self.hooks,
            execute=execute,
            lease=float(lease),
            poll_interval=float(poll_interval),
            max_lost_leases=max_lost_leases,
            max_task_size=max_task_size,
            queues=queue_names(queues),
            signing_key=signing_key_of(signing_key),
            queue_rate_limits=queue_rate_limits,
        )
        queue_gates(queue_rate_limits)  # a bad one fails here, with or without a store
        # Periodic tasks: `schedule(...)`'s, then at start those declared with @task(cron=...).
        self._schedule_list = ScheduleList()
        self.schedules = self._schedule_list.schedules
        self._engine: Engine = LocalEngine(
            self.limits, self.hooks, eager=eager, round_trip=round_trip
        )
        self._engine.schedules = self.schedules
        if store is not None and not eager:
            self.use_store(store)

    def use_store(self, store: str | Store) -> None:
        """Keep tasks in this store from now on (``backbeat worker --store URL``); only
        before the runner starts. The names registered so far are kept."""
        if self.running:
            raise RuntimeError("a running runner cannot change its store")
        engine = self._stored_engine(
            open_store(store) if isinstance(store, str) else store,
            owns_store=isinstance(store, str),
            registry=self._engine.registry,
        )
        engine.schedules = self.schedules
        self._engine = engine

    # --- what the runner is ----------------------------------------------------------

    @property
    def durable(self) -> bool:
        """True when tasks are kept in a store."""
        return self._engine.durable

    @property
    def store(self) -> Store | None:
        return self._engine.store

    @property
    def executes(self) -> bool:
        """Whether this process runs the tasks (False: it only writes them, workers run them)."""
        return self._engine.execute

    @executes.setter
    def executes(self, value: bool) -> None:
        self._engine.execute = value

    @property
    def concurrency(self) -> int:
        return self.limits.concurrency

    @concurrency.setter
    def concurrency(self, value: int) -> None:
        check_count("concurrency", value)
        self.limits.concurrency = value

    @property
    def queues(self) -> tuple[str, ...] | None:
        """The queues this process runs tasks from (None: all); the CLI's ``--queues``."""
        return self._engine.queues

    @queues.setter
    def queues(self, value: list[str] | tuple[str, ...] | None) -> None:
        self._engine.queues = queue_names(value)

    @property
    def shutdown_timeout(self) -> float:
        return self.limits.shutdown_timeout

    @property
    def running(self) -> bool:
        """True between `start()` and the end of `drain()`'s accepting phase."""
        return self._engine.accepting

    # --- names, and writing ahead of a response (stored tasks) -------------------------

    def register(self, func: Callable[..., Any]) -> str:
        """Let this runner (and workers loading this app) run `func` by name.

        Needed for stored tasks whose functions are neither `@task`, a route's
        ``background=``, nor defined next to the app's handlers; raises
        TypeError for what cannot be found by name.
        """
        return self._engine.register(func)

    def register_module(self, module: str) -> None:
        """Let this runner run the plain module-level functions of `module` by name.

        `App` and `BackbeatMiddleware` do it for the modules of their route handlers.
        """
        self._engine.register_module(module)

    def register_tasks(self, task: BackgroundTask) -> None:
        """Register every function in a task tree (a route's ``background=``); TypeError or
        ValueError, as a request storing it would get, for one a store could not run."""
        self._engine.register_tree(task)

    async def prepare(self, task: BackgroundTask) -> Prepared:
        """Write a request's tasks before its response starts; activate them once it is sent."""
        return await self._engine.prepare(task)

    async def prepare_collected(self, collector: RequestTasks) -> None:
        """Store the tasks a request made before its response starts (`BackbeatMiddleware`)."""
        await self._engine.prepare_collected(collector)

    async def abandon_collected(self, collector: RequestTasks, reason: str) -> None:
        await self._engine.abandon_collected(collector, reason)

    # --- lifecycle -------------------------------------------------------------------

    def schedule(
        self,
        func: Callable[..., Any],
        *,
        cron: str | None = None,
        every: timedelta | float | None = None,
        tz: str | None = None,
        args: tuple[Any, ...] | list[Any] = (),
        kwargs: dict[str, Any] | None = None,
        name: str | None = None,
        missed: MissedTicks = "latest",
        catch_up: int = 10,
        max_lateness: timedelta | float | None = None,
        skip_if_running: bool = False,
    ) -> Schedule:
        """Enqueue ``func(*args, **kwargs)`` at every tick of a cron expression (in time
        zone `tz`, default UTC) or of an interval, once per tick whatever the number of
        processes: each runner with this store tries, the store lets one enqueue it.

        ``missed`` says what happens to ticks missed while every process was down: the
        latest runs once (``"latest"``), each of the newest ``catch_up`` runs (``"all"``),
        or none (``"skip"``); a tick later than ``max_lateness`` never runs. With
        ``skip_if_running``, a tick is skipped while the previous tick's task is pending
        or running. ``name`` (default: the task's name) identifies the schedule in the
        store and in ``backbeat schedules``. A store is needed; ValueError or TypeError
        now for a schedule whose ticks could not be stored. docs/scheduling.md.
        """
        return self._schedule_list.add(
            self._engine,
            func,
            name,
            cron=cron,
            every=every,
            tz=tz,
            args=args,
            kwargs=kwargs,
            missed=missed,
            catch_up=catch_up,
            max_lateness=max_lateness,
            skip_if_running=skip_if_running,
        )

    async def start(self) -> None:
        if not self.running:
            self._schedule_list.gather_declared(self._engine)
        await self._engine.start()

    async def wait_connected(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Wait until the started runner's store has answered (a store unreachable at
        start-up is tried again in the background); False after `timeout` seconds."""
        return await self._engine.wait_connected(timeout)

    async def drain(self) -> None:
        """Stop taking tasks; give the others `shutdown_timeout` s; then cancel the rest
        (lost without a store, released to the store with one)."""
        await self._engine.drain()

    async def __aenter__(self) -> Runner:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.drain()

    # --- taking tasks ------------------------------------------------------------------

    def submit(self, task: BackgroundTask, *, connection: object = None) -> str:
        """Take a task (or a `BackgroundTasks`) now; returns the id its status is kept under.

        That is the task's own id, except for a task object already handed over
        (or a route's task): each run of it gets a new id.

        Without a store: raises `RunnerFull` when ``max_pending`` tasks are
        waiting, and RuntimeError when the runner is not running. Call it on the
        runner's loop.

        With a store, from code that has no event loop running (a script, a cron
        job, a Django view): the task is written to the store before this returns,
        for the app's processes or ``backbeat worker`` to run; the runner need not
        be started. In async code, use ``await runner.asubmit(task)``.

        ``connection``: a blocking connection of the app's (psycopg's, Django's) in an
        open transaction, in the database of the runner's PostgreSQL store: the task is
        written in that transaction, as `asubmit` does (docs/postgres.md).
        """
        if not isinstance(task, BackgroundTask):
            raise TypeError(f"Runner.submit expects a BackgroundTask, got {task!r}")
        return self._engine.submit(self._handed(task), connection)

    async def asubmit(self, task: BackgroundTask, *, connection: object = None) -> str:
        """`submit` for any runner; with a store, returns once the task is written.

        ``connection``: the app's connection (asyncpg, psycopg, SQLAlchemy) in an open
        transaction, in the database of the runner's PostgreSQL store. The task is written
        in that transaction, which is never begun, committed or rolled back here: workers
        see it (and are woken) when it commits; rolled back, it never existed. TypeError
        for a runner whose store cannot, or a connection it does not know; ValueError for
        one whose statements would commit on their own (docs/postgres.md).
        """
        if not isinstance(task, BackgroundTask):
            raise TypeError(f"Runner.asubmit expects a BackgroundTask, got {task!r}")
        return await self._engine.asubmit(self._handed(task), connection)

    def submit_on_commit(self, task: BackgroundTask, on_commit: OnCommit) -> str:
        """`submit`, the write left to `on_commit`: a hook that calls a function back once
        the app's transaction commits, never if it rolls back (Django's
        ``transaction.on_commit``). Everything that can refuse the task does so now (its
        name, arguments, size), and the id it will have is returned; the write happens
        when `on_commit` calls back, on that thread. A write that fails then is logged with
        the task's id and raised to whoever committed. With a key a live task holds, the
        task is not written (that task runs). TypeError for a runner without a store.
        """
        if not isinstance(task, BackgroundTask):
            raise TypeError(f"Runner.submit_on_commit expects a BackgroundTask, got {task!r}")
        return self._engine.submit_on_commit(self._handed(task), on_commit)

    def take(self, task: BackgroundTask) -> bool:
        """What `await task()` does first inside a request served under this runner:
        take the task if there is room (no await on this path). False: call `hand_off`."""
        return self._engine.take(self._handed(task))

    def _handed(self, task: BackgroundTask) -> BackgroundTask:
        """The task as a store would hand it to a worker, where this runner round-trips."""
        return self._engine.as_stored(task) if self.round_trip else task

    async def hand_off(self, task: BackgroundTask) -> None:
        """Take the task, or wait for room, or run it inline; eager mode runs it here."""
        await self._engine.hand_off(self._handed(task))

    # --- looking, results, cancelling ----------------------------------------------------

    def get(self, task_id: str) -> TaskInfo | None:
        """The status of a task by id, or None (unknown, or finished and forgotten).

        Safe to call from any thread.
        """
        return self._engine.get(task_id)

    async def aget(self, task_id: str) -> TaskInfo | None:
        """`get` for handlers (stores that do I/O make this the one to use)."""
        return await self._engine.aget(task_id)

    def stored(self, task_id: str) -> StoredStatus | None:
        """A stored task as the store keeps it (arguments and result as JSON, the worker),
        for integrations; None without a store. Safe to call from any thread."""
        return self._engine.stored(task_id)

    def local_tasks(self) -> list[TaskInfo]:
        """The tasks of this process's in-memory table, oldest first (what the dashboard shows
        of a runner without a store); empty with a store (it keeps them)."""
        return self._engine.tasks()

    def stats(self) -> dict[str, int]:
        """Counts by state: live for pending/scheduled/running, totals for finished states.

        With a store: the store's counts (finished tasks until they are purged).
        """
        return self._engine.stats()

    async def queue_stats(self) -> dict[str, dict[str, int]]:
        """Pending, scheduled and running tasks per queue; with a store, the store's (every
        process's tasks)."""
        return await self._engine.queue_stats()

    def health(self) -> WorkerHealth | None:
        """Whether this process's worker beats (its loop, lease keeper and claim loop); None
        when this process runs no stored tasks. Safe to call from any thread."""
        return self._engine.health()

    async def join(self, timeout: float | None = None) -> None:  # noqa: ASYNC109 - the brief's API
        """Wait until no task is pending, scheduled or running (TimeoutError after `timeout`).

        With a store: until the store has no such task, whichever process runs it.
        """
        await self._engine.join(timeout)

    async def aresult(self, task_id: str, timeout: float | None = None) -> Any:  # noqa: ASYNC109
        """Wait for a task to finish and return its value (JSON-decoded for a stored task).

        Raises `TaskFailed` (with the last error) if it failed, `TaskCancelled` if it
        was cancelled, LookupError for an unknown id, TimeoutError after `timeout`.
        """
        return await wait_for_result(self._engine, task_id, timeout)

    def result(self, task_id: str, timeout: float | None = None) -> Any:
        """`aresult` for code without an event loop (a script, another thread)."""
        return wait_for_result_blocking(self._engine, task_id, timeout)

    async def acancel(self, task_id: str, reason: str = "cancelled") -> bool:
        """Cancel a task: if it has not started it never will; if it runs, it is cancelled
        (an async task at its next await; with a store, at its worker's next lease
        renewal). True if there was something to cancel; its state becomes `cancelled`."""
        return await self._engine.acancel(task_id, reason)

    def cancel(self, task_id: str, reason: str = "cancelled") -> bool:
        """`acancel` from sync code: on the runner's loop (no store), or without a loop."""
        return self._engine.cancel(task_id, reason)

    # --- hooks ---------------------------------------------------------------------------

    def add_observer(self, observer: Observer) -> None:
        """Tell `observer` of every task handed over and every attempt (`backbeat.observers`)."""
        self.hooks.add_observer(observer)

    def add_failure_listener(self, listener: FailureListener) -> None:
        """Call `listener(info, exc)` for every task that failed for good (`TestClient` uses it)."""
        self.hooks.failure_listeners.append(listener)

    def remove_failure_listener(self, listener: FailureListener) -> None:
        self.hooks.remove_failure_listener(listener)
