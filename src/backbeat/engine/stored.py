"""The stored feeder: what a `Runner` does when it has a store.

Tasks are written to the store (a registered function's name, its arguments
as JSON, its policy) — before the client can see a 2xx (in `App`, before
``http.response.start``, held back until the response has been sent). Any
process with the same app and store — the app itself, ``backbeat worker``
processes — claims runnable tasks under a lease and runs them
(`engine.worker`); a process that dies mid-task leaves a lease that expires,
and another claims the task: at-least-once. This module is the writing half:
task trees to stored tasks, write-ahead and activation, status reads.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from backbeat.batching import TurnBatch
from backbeat.concurrency import in_event_loop
from backbeat.engine.blocking import BlockingCalls
from backbeat.engine.claims import WrittenHere
from backbeat.engine.connecting import StoreConnection
from backbeat.engine.execution import Hooks
from backbeat.engine.health import WorkerHealth
from backbeat.engine.limits import Limits
from backbeat.engine.round_trip import original_function
from backbeat.engine.scheduler import Scheduler
from backbeat.engine.worker import StoredWorker
from backbeat.gates import Gates, gates_of, queue_gates
from backbeat.ids import new_id
from backbeat.observers import carry_all
from backbeat.policy import TaskPolicy
from backbeat.registry import TaskRegistry
from backbeat.schedules import Schedule
from backbeat.serialization import (
    ArgumentError,
    decode_arguments,
    encode_arguments,
    read_back_as_given,
)
from backbeat.signing import sign
from backbeat.status import UNFINISHED, TaskInfo
from backbeat.stores.base import NewTask, Store, StoredStatus, StoreError, TransactionalStore
from backbeat.tasks import (
    BackgroundTask,
    BackgroundTasks,
    RequestTasks,
    declared_tasks,
    request_tasks,
)

if TYPE_CHECKING:
    from backbeat.engine.protocol import OnCommit

logger = logging.getLogger("backbeat")

_REMEMBERED_IDS = 100_000
# A task written here keeps its decoded call until claimed here when its arguments are
# at most this many bytes of JSON (most are): memory stays bounded by the cap on ids.
_KEPT_CALL_SIZE = 2048


class Prepared:
    """Tasks written ahead of a response: `activate` once it is sent, else `abandon`."""

    __slots__ = ("activated", "engine", "ids")

    def __init__(self, engine: StoredEngine, ids: list[str]) -> None:
        self.engine = engine
        self.ids = ids
        self.activated = False

    async def activate(self) -> None:
        self.activated = True
        self.engine.activate_soon(self.ids)

    async def abandon(self, reason: str) -> None:
        if not self.activated:
            await self.engine.store.cancel(self.ids, reason)


class StoredEngine:
    """Writes tasks to a store and, where it executes, claims and runs them under leases."""

    durable = True
    eager = False
    status_poll = 0.05  # a look at the status is a store read

    def __init__(
        self,
        store: Store,
        limits: Limits,
        hooks: Hooks,
        *,
        execute: bool,
        lease: float,
        poll_interval: float,
        max_lost_leases: int = 3,
        max_task_size: int = 1 << 20,
        queues: tuple[str, ...] | None = None,
        owns_store: bool = False,
        registry: TaskRegistry | None = None,
        signing_key: bytes | None = None,
        queue_rate_limits: dict[str, str] | None = None,
    ) -> None:
        self.store = store
        self.queue_gates = queue_gates(queue_rate_limits)
        self.hooks = hooks
        self.owns_store = owns_store  # made from a URL here: closed when the runner stops
        self.calls = BlockingCalls(store)
        self.limits = limits
        self.execute = execute
        self.lease = lease
        self.max_task_size = max_task_size
        self.registry = registry or TaskRegistry()
        self.signing_key = signing_key
        # Tasks this process wrote, so that it runs them in their request's context
        # (and without reading their arguments back) when it claims them itself.
        self._written_here: dict[str, WrittenHere] = {}
        self._written: OrderedDict[str, None] = OrderedDict()
        self.worker = StoredWorker(
            store,
            self.registry,
            limits,
            hooks,
            lease=lease,
            poll_interval=poll_interval,
            max_lost_leases=max_lost_leases,
            written_here=self._written_here,
            queues=queues,
            signing_key=signing_key,
            max_task_size=max_task_size,
        )
        self.accepting = False
        self.connection = StoreConnection(store, self._opened)
        self._activations: TurnBatch[str] = TurnBatch(self._activate)
        self._opened_for_blocking = False  # `submit(connection=...)` opened the store once
        # The app's periodic tasks (the runner's list: one added later is seen).
        self.schedules: list[Schedule] = []
        self.scheduler: Scheduler | None = None
        self._scheduling: asyncio.Task[None] | None = None

    # --- names -------------------------------------------------------------------------

    @property
    def queues(self) -> tuple[str, ...] | None:
        return self.worker.queues

    @queues.setter
    def queues(self, value: tuple[str, ...] | None) -> None:
        self.worker.queues = value

    def register(self, func: Callable[..., Any]) -> str:
        return self.registry.register(func)

    def register_module(self, module: str) -> None:
        self.registry.add_module(module)

    def register_declared(self) -> None:
        """Every @task function imported so far that can be found by name."""
        for func in declared_tasks():
            with contextlib.suppress(TypeError):
                self.registry.register(func)

    def register_tree(self, task: BackgroundTask) -> None:
        """Register every function of a task tree declared ahead of any request (a route's
        ``background=``) and check that its arguments can be stored; TypeError or
        ValueError, as a request storing it would get, for the first that cannot."""
        if isinstance(task, BackgroundTasks):
            for member in task.tasks:
                self.register_tree(member)
        else:
            func = original_function(task)
            self.stored_arguments(task, self.register(func), func, None)

    # --- writing -------------------------------------------------------------------------

    def rows(
        self,
        task: BackgroundTask,
        caller: contextvars.Context | None,
        *,
        hold: bool,
        remember: bool = True,
    ) -> list[NewTask]:
        """The rows for a task tree; TypeError for anything that cannot be stored.

        ``remember=False``: a row that may never be stored (a schedule's tick, which
        another process may enqueue first), so this process keeps nothing of it."""
        now = time.time()
        rows: list[NewTask] = []
        self._flatten(task, [], rows, caller, now, hold, remember)
        return rows

    def scheduled_task(self, schedule: Schedule, tick: int) -> NewTask:
        """The task a schedule's tick enqueues (`engine.scheduler`): due at the tick (after
        the task's delay, if it has one), which its status shows (`StoredStatus.due_at`)."""
        task = BackgroundTask(schedule.func, *schedule.args, **schedule.kwargs)
        [row] = self.rows(task, contextvars.Context(), hold=False, remember=False)
        row.due_at = tick + (task.policy.delay or 0.0)
        return row

    def _flatten(
        self,
        task: object,
        after: list[str],
        rows: list[NewTask],
        caller: contextvars.Context | None,
        now: float,
        hold: bool,
        remember: bool = True,
    ) -> list[str]:
        if isinstance(task, BackgroundTasks):
            if task.as_group:
                ends: list[str] = []
                for member in task.tasks:
                    ends.extend(self._flatten(member, after, rows, caller, now, hold, remember))
                return ends or after
            for member in task.tasks:
                after = self._flatten(member, after, rows, caller, now, hold, remember)
            return after
        if not isinstance(task, BackgroundTask):
            task = BackgroundTask(task)  # type: ignore[arg-type]  # appended to .tasks by hand
        func = original_function(task)
        name = self.registry.name_to_store(func)
        # The context the task was made in, or the caller's: observers look there, and
        # this process runs the task in a copy of it if it claims it itself.
        made_in = task.context or caller or contextvars.copy_context()
        carried = made_in.run(carry_all, self.hooks.observers) if self.hooks.observers else None
        payload, args, kwargs = self.stored_arguments(task, name, func, carried)
        fresh = task.context is None or task.id in self._written
        task_id = new_id() if fresh else task.id
        if self.signing_key is not None:
            payload = sign(self.signing_key, task_id, name, payload)
        created = now if fresh else task.created
        policy: TaskPolicy = task.policy
        due = created + policy.delay if policy.delay else now
        # The gates' key values, from the call as given (before JSON), now: a key that
        # cannot be computed refuses the task before any 2xx.
        gates = _gates(policy, name, func, task) if policy.gated else _NO_GATES
        if gates.rate_gate is None and policy.queue in self.queue_gates:
            # The queue's limit, for a task without one of its own.
            queue_gate = self.queue_gates[policy.queue]
            gates = queue_gate._replace(
                concurrency_gate=gates.concurrency_gate, max_concurrency=gates.max_concurrency
            )
        rows.append(
            NewTask(
                id=task_id,
                name=name,
                payload=payload,
                created_at=created,
                due_at=due,
                retries=policy.retries,
                backoff=policy.backoff,
                max_backoff=policy.max_backoff,
                timeout=policy.timeout,
                after=tuple(after),
                # Runnable once the response is out; if this process dies before
                # that, after one lease anyway (at-least-once).
                held_until=now + self.lease if hold else None,
                queue=policy.queue,
                priority=policy.priority,
                key=policy.key,
                rate_gate=gates.rate_gate,
                rate_limit=gates.rate_limit,
                rate_window=gates.rate_window,
                concurrency_gate=gates.concurrency_gate,
                max_concurrency=gates.max_concurrency,
            )
        )
        if not remember:
            return [task_id]
        self._written[task_id] = None
        if len(self._written) > _REMEMBERED_IDS:
            self._written.popitem(last=False)
        if self.execute:
            call = (func, args, kwargs) if len(payload) <= _KEPT_CALL_SIZE else None
            self._written_here[task_id] = WrittenHere(made_in.copy(), call)
            if len(self._written_here) > _REMEMBERED_IDS:
                self._written_here.pop(next(iter(self._written_here)))
        return [task_id]

    def stored_arguments(
        self,
        task: BackgroundTask,
        name: str,
        func: Callable[..., Any],
        carried: dict[str, str] | None,
    ) -> tuple[str, tuple[Any, ...], dict[str, Any]]:
        """A task's arguments as stored, and as a worker will read them back."""
        payload = encode_arguments(name, task.args, task.kwargs, carried)
        # What a worker will read back must fit the function (a set stored as a list for a
        # `str` parameter would fail there, after the 2xx): read it back now, unless it is
        # plainly what was given.
        if read_back_as_given(func, task.args, task.kwargs):
            args, kwargs = tuple(task.args), dict(task.kwargs)
        else:
            try:
                args, kwargs = decode_arguments(func, payload)
            except ArgumentError as exc:
                raise ArgumentError(f"task {name!r} cannot be stored: {exc}") from None
        if len(payload) > self.max_task_size:
            raise ValueError(
                f"task {name!r} cannot be stored: its arguments are {len(payload)} bytes as "
                f"JSON, over the limit of {self.max_task_size} (Runner(max_task_size=...)); "
                "keep large data elsewhere (a file, a table, an object store) and pass a reference"
            )
        return payload, args, kwargs

    def as_stored(self, task: BackgroundTask) -> BackgroundTask:
        return task  # the store's own round trip is the real one

    def take(self, task: BackgroundTask) -> bool:
        return False  # a stored task is handed over by writing it, which takes an await

    async def hand_off(self, task: BackgroundTask) -> None:
        collector = request_tasks.get()
        if collector is not None:
            if collector.refused:
                return  # they could not be stored and the client was told so
            prepared = collector.prepared.pop(id(task), None)
            if prepared is not None:
                await prepared.activate()  # stored ahead of the response: now runnable
                return
        # The write is the hand-off, whether or not this process executes.
        await self.write(task, contextvars.copy_context())

    async def asubmit(self, task: BackgroundTask, connection: object = None) -> str:
        caller = contextvars.copy_context()
        if connection is None:
            ids = await self.write(task, caller)
        else:
            store = self._transactional()
            ids = await store.enqueue_on(connection, self.rows(task, caller, hold=False))
        return ids[0] if len(ids) == 1 else task.id

    async def write(
        self, task: BackgroundTask, caller: contextvars.Context | None, store: Store | None = None
    ) -> list[str]:
        rows = self.rows(task, caller, hold=False)
        # The store wakes the workers waiting on it in this process (`Store.wait`).
        return await (store or self.store).enqueue(rows)

    def submit(self, task: BackgroundTask, connection: object = None) -> str:
        """`asubmit` for code without a running event loop: returns once the task is written.
        With `connection` (a blocking one of the app's), written in its transaction, on
        this thread, whatever runs here."""
        caller = contextvars.copy_context()
        if connection is not None:
            store = self._transactional()
            if not self._opened_for_blocking:  # the schema exists before the app's write
                self.calls.call(lambda store: store.open())
                self._opened_for_blocking = True
            ids = store.enqueue_on_blocking(connection, self.rows(task, caller, hold=False))
            return ids[0] if len(ids) == 1 else task.id
        if in_event_loop():
            raise RuntimeError(
                "a runner with a store writes to it, which takes an await here: use "
                "`await runner.asubmit(task)` in async code"
            )
        ids = self.calls.call(lambda store: self.write(task, caller, store))
        return ids[0] if len(ids) == 1 else task.id

    def submit_on_commit(self, task: BackgroundTask, on_commit: OnCommit) -> str:
        """The rows made now (every refusal `submit` has), written when `on_commit` calls
        back. The id is the new task's own (with a key a live task holds: never written)."""
        rows = self.rows(task, contextvars.copy_context(), hold=False)
        on_commit(lambda: self.calls.write_committed(rows))
        return rows[0].id if len(rows) == 1 else task.id

    def _transactional(self) -> TransactionalStore:
        """The store, if it can write in the app's transaction; else TypeError naming it."""
        if not isinstance(self.store, TransactionalStore):
            raise TypeError(
                f"connection= writes the task in your database transaction, which {self.store!r} "
                "cannot: it is not in your database (a PostgreSQL store is)"
            )
        return self.store

    async def prepare(self, task: BackgroundTask) -> Prepared:
        rows = self.rows(task, contextvars.copy_context(), hold=True)
        await self.store.enqueue(rows)
        return Prepared(self, [row.id for row in rows])

    async def prepare_collected(self, collector: RequestTasks) -> None:
        """Store ahead of the response every task a request made, in one write.

        Only the outermost ones: a task inside a collection is stored with it.
        """
        inside: set[int] = set()
        for made in collector.created:
            if isinstance(made, BackgroundTasks):
                _members(made, inside)
        roots = [
            made
            for made in collector.created
            if id(made) not in inside
            and id(made) not in collector.prepared
            and made.id not in self._written
        ]
        if not roots:
            return
        caller = contextvars.copy_context()
        planned = [(root, self.rows(root, caller, hold=True)) for root in roots]
        await self.store.enqueue([row for _, rows in planned for row in rows])
        for root, rows in planned:
            collector.prepared[id(root)] = Prepared(self, [row.id for row in rows])

    async def abandon_collected(self, collector: RequestTasks, reason: str) -> None:
        """Cancel what was stored ahead for a request but never handed over by its response."""
        ids = [
            task_id
            for prepared in collector.prepared.values()
            if isinstance(prepared, Prepared) and not prepared.activated
            for task_id in prepared.ids
        ]
        collector.prepared.clear()
        if ids:
            try:
                await self.store.cancel(ids, reason)
            except StoreError as exc:
                logger.error("backbeat: cannot cancel %d unused task(s): %s", len(ids), exc)

    def activate_soon(self, ids: list[str]) -> None:
        """Make written-ahead tasks runnable, in one write per turn of the event loop.

        The request does not wait for it: should it fail, the tasks still become
        runnable when their hold runs out.
        """
        self._activations.add(*ids)

    async def _activate(self, ids: list[str]) -> None:
        self.connection.store_answered()  # they were written: the store is there
        worker = self.worker
        free = worker.free
        try:
            if self.execute and free > 0:
                # Activate and claim in one write: this process runs what it accepted.
                claimed = await self.store.activate_and_claim(worker.name, ids, self.lease, free)
                for item in claimed:
                    worker.spawn(item)
                if len(claimed) == len(ids):
                    return
            else:
                await self.store.activate(ids)
        except StoreError as exc:
            logger.error("backbeat: cannot activate %d task(s) (they run later): %s", len(ids), exc)
        worker.backlog = True  # some wait for a slot, a delay or an earlier task
        worker.poke()

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        if self.accepting:
            return  # started already (the app's lifespan and a middleware's, say)
        self.register_declared()
        self.calls.loop = asyncio.get_running_loop()
        self.accepting = True
        # A bad URL, a missing or corrupt store: an error at start-up. An unreachable one
        # is tried again while the app serves (`engine.connecting`).
        self.connection = StoreConnection(self.store, self._opened)
        try:
            await self.connection.open()
        except BaseException:
            self.accepting = False
            raise

    def health(self) -> WorkerHealth | None:
        """The worker's health (`engine.health`), None where this process runs no tasks.
        Waiting for a store that cannot be reached is no problem of this process:
        restarting it would not help, it retries."""
        if not self.execute:
            return None
        if self.accepting and not self.connection.connected.is_set():
            return WorkerHealth(self.worker.name, 0, 0.0, 0.0, (), waiting_for_store=True)
        return self.worker.health()

    async def wait_connected(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        try:
            async with asyncio.timeout(timeout):
                await self.connection.connected.wait()
        except TimeoutError:
            return False
        return True

    async def _opened(self) -> None:
        if self.execute:
            await self.worker.start()
        self._start_scheduler()

    def check_schedule(self, schedule: Schedule) -> None:
        """TypeError or ValueError now, not at a tick, for a schedule whose task could not be
        stored (its function found by name by any process, its arguments kept as JSON, its
        limits' keys computed). Scheduling a function declares it: it is registered."""
        self.register(schedule.func)
        self.scheduled_task(schedule, 0)

    def gather_schedules(self, declared: list[Schedule]) -> None:
        for found in declared:
            self.check_schedule(found)
            self.schedules.append(found)

    def schedule_added(self) -> None:
        """A schedule was added to `schedules`: the scheduler sees it now (from any thread)."""
        if self.calls.loop is not None:
            self.calls.loop.call_soon_threadsafe(self._schedule_ticks)

    def _schedule_ticks(self) -> None:
        if self.scheduler is not None:
            self.scheduler.poke()
        elif self.accepting and self.connection.connected.is_set():
            self._start_scheduler()

    def _start_scheduler(self) -> None:
        """Start trying the schedules' ticks (the store has answered)."""
        if self.scheduler is None and self.schedules:
            self.scheduler = Scheduler(self.store, self.schedules, self.scheduled_task)
            self._scheduling = asyncio.get_running_loop().create_task(
                self.scheduler.run(), context=contextvars.Context()
            )

    async def drain(self) -> None:
        self.accepting = False
        if self._scheduling is not None:
            self._scheduling.cancel()
            await asyncio.gather(self._scheduling, return_exceptions=True)
            self._scheduling = self.scheduler = None
        await self.connection.close()
        if self.worker.claiming:
            await self.worker.drain()
        await self._activations.settle()
        self.calls.loop = None
        if self.owns_store:
            await self.store.close()

    async def acancel(self, task_id: str, reason: str) -> bool:
        return await self.store.cancel([task_id], reason) > 0

    def cancel(self, task_id: str, reason: str) -> bool:
        return self.calls.call(lambda store: store.cancel([task_id], reason)) > 0

    # --- looking -------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo | None:
        status = self.calls.call(lambda store: store.get(task_id))
        return None if status is None else status.info(time.time())

    async def aget(self, task_id: str) -> TaskInfo | None:
        status = await self.store.get(task_id)
        return None if status is None else status.info(time.time())

    def stored(self, task_id: str) -> StoredStatus | None:
        return self.calls.call(lambda store: store.get(task_id))

    def tasks(self) -> list[TaskInfo]:
        return []  # the store keeps them, not this process

    def stats(self) -> dict[str, int]:
        return self.calls.call(lambda store: store.counts())

    async def queue_stats(self) -> dict[str, dict[str, int]]:
        counts = {}
        for queue in await self.store.queues():
            of_queue = await self.store.counts(queue)
            counts[queue] = {state: of_queue[state] for state in UNFINISHED}
        return counts

    async def join(self, timeout: float | None) -> None:  # noqa: ASYNC109 - the runner's API
        async with asyncio.timeout(timeout):
            while True:
                counts = await self.store.counts()
                if counts["pending"] + counts["scheduled"] + counts["running"] == 0:
                    return
                await asyncio.sleep(0.02)


def _members(collection: BackgroundTasks, inside: set[int]) -> None:
    for member in collection.tasks:
        inside.add(id(member))
        if isinstance(member, BackgroundTasks):
            _members(member, inside)


_NO_GATES = Gates(None, 0, 0.0, None, 0)


def _gates(policy: TaskPolicy, name: str, func: Callable[..., Any], task: BackgroundTask) -> Gates:
    return gates_of(
        name,
        func,
        task.args,
        task.kwargs,
        rate_limit=policy.rate_limit,
        rate_limit_key=policy.rate_limit_key,
        concurrency_key=policy.concurrency_key,
        max_concurrency=policy.max_concurrency,
    )
