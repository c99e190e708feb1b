"""The stored feeder: what a `Runner` does when it has a store.

Tasks are rows in the store (a registered function's name, its arguments as
JSON, its policy). Writing happens before the client can see a 2xx (in `App`,
before ``http.response.start``); the rows become runnable once the response
has been sent. Any process with the same app and store — the app itself,
``backbeat worker`` processes — claims runnable rows under a lease, renews the
lease while the task runs, and records the outcome: done, retry at a time, or
failed for good (the dead letter). A process that dies mid-task leaves a
lease that expires, and another claims the task: at-least-once.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

from backbeat.concurrency import AsyncCallable, enforce_async_callable
from backbeat.engine.execution import (
    Attempt,
    Hooks,
    Outcome,
    report_failure,
    run_attempt,
    task_info,
)
from backbeat.engine.leases import LeaseKeeper
from backbeat.engine.limits import Limits
from backbeat.ids import new_id
from backbeat.policy import DEFAULT_POLICY, TaskPolicy
from backbeat.registry import TaskRegistry
from backbeat.serialization import ArgumentError, decode_arguments, encode_arguments
from backbeat.status import TaskInfo, TaskState
from backbeat.stores.base import ClaimedTask, NewTask, Store, StoreError
from backbeat.tasks import (
    BackgroundTask,
    BackgroundTasks,
    RequestTasks,
    current_runner,
    declared_tasks,
)

logger = logging.getLogger("backbeat")

_REMEMBERED_IDS = 100_000


def original_function(task: BackgroundTask) -> Callable[..., Any]:
    func = task.func
    return func.__wrapped__ if isinstance(func, AsyncCallable) else func


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
    ) -> None:
        self.limits = limits
        self.hooks = hooks
        self.max_task_size = max_task_size
        self.store = store
        self.execute = execute
        self.lease = lease
        self.poll_interval = poll_interval
        self.max_lost_leases = max_lost_leases
        self._loop: asyncio.AbstractEventLoop | None = None
        self._keeper: LeaseKeeper | None = None
        # A task whose lease was lost before runs alone: while it runs, nothing is claimed.
        self._isolated: str | None = None
        self.registry = TaskRegistry()
        self.worker = f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
        # Contexts of tasks this process wrote, so that it runs them in their
        # request's context when it claims them itself.
        self._contexts: dict[str, contextvars.Context] = {}
        self._written: OrderedDict[str, None] = OrderedDict()
        self._executions: dict[str, asyncio.Task[None]] = {}
        self._loops: list[asyncio.Task[None]] = []
        self._wake: asyncio.Event | None = None
        self.accepting = False
        # Writes gathered over one turn of the event loop, then made together.
        self._to_activate: list[str] = []
        self._to_complete: list[str] = []
        self._background: set[asyncio.Task[None]] = set()
        # Tasks may be waiting that a finishing task could let run: look when one ends.
        self._backlog = False

    # --- names -------------------------------------------------------------------------

    def register(self, func: Callable[..., Any]) -> str:
        return self.registry.register(func)

    def register_declared(self) -> None:
        """Every @task function imported so far that can be found by name."""
        for func in declared_tasks():
            with contextlib.suppress(TypeError):
                self.registry.register(func)

    def register_tree(self, task: BackgroundTask) -> None:
        if isinstance(task, BackgroundTasks):
            for member in task.tasks:
                self.register_tree(member)
        else:
            self.register(original_function(task))

    # --- writing -------------------------------------------------------------------------

    def rows(
        self, task: BackgroundTask, caller: contextvars.Context | None, *, hold: bool
    ) -> list[NewTask]:
        """The rows for a task tree; TypeError for anything that cannot be stored."""
        now = time.time()
        rows: list[NewTask] = []
        self._flatten(task, [], rows, caller, now, hold)
        return rows

    def _flatten(
        self,
        task: object,
        after: list[str],
        rows: list[NewTask],
        caller: contextvars.Context | None,
        now: float,
        hold: bool,
    ) -> list[str]:
        if isinstance(task, BackgroundTasks):
            if task.as_group:
                ends: list[str] = []
                for member in task.tasks:
                    ends.extend(self._flatten(member, after, rows, caller, now, hold))
                return ends or after
            for member in task.tasks:
                after = self._flatten(member, after, rows, caller, now, hold)
            return after
        if not isinstance(task, BackgroundTask):
            task = BackgroundTask(task)  # type: ignore[arg-type]  # appended to .tasks by hand
        name = self.registry.name_to_store(original_function(task))
        payload = encode_arguments(name, task.args, task.kwargs)
        if len(payload) > self.max_task_size:
            raise ValueError(
                f"task {name!r} cannot be stored: its arguments are {len(payload)} bytes as "
                f"JSON, over the limit of {self.max_task_size} (Runner(max_task_size=...)); "
                "keep large data elsewhere (a file, a table, an object store) and pass a reference"
            )
        fresh = task.context is None or task.id in self._written
        task_id = new_id() if fresh else task.id
        created = now if fresh else task.created
        policy: TaskPolicy = task.policy
        due = created + policy.delay if policy.delay else now
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
                after=_json_ids(after),
                # Runnable once the response is out; if this process dies before
                # that, after one lease anyway (at-least-once).
                held_until=now + self.lease if hold else None,
            )
        )
        self._remember(task_id, (task.context or caller or contextvars.copy_context()).copy())
        return [task_id]

    def _remember(self, task_id: str, context: contextvars.Context) -> None:
        self._written[task_id] = None
        if len(self._written) > _REMEMBERED_IDS:
            self._written.popitem(last=False)
        if self.execute:
            self._contexts[task_id] = context
            if len(self._contexts) > _REMEMBERED_IDS:
                self._contexts.pop(next(iter(self._contexts)))

    def take(self, task: BackgroundTask) -> bool:
        return False  # a stored task is handed over by writing it, which takes an await

    async def hand_off(self, task: BackgroundTask) -> None:
        # The write is the hand-off, whether or not this process executes.
        await self.write(task, contextvars.copy_context())

    async def asubmit(self, task: BackgroundTask) -> str:
        ids = await self.write(task, contextvars.copy_context())
        return ids[0] if len(ids) == 1 else task.id

    async def write(self, task: BackgroundTask, caller: contextvars.Context | None) -> list[str]:
        rows = self.rows(task, caller, hold=False)
        await self.store.enqueue(rows)
        self._poke()
        return [row.id for row in rows]

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
        if not self._to_activate:
            asyncio.get_running_loop().call_soon(self._flush_activations)
        self._to_activate.extend(ids)

    def _flush_activations(self) -> None:
        ids, self._to_activate = self._to_activate, []
        flush = self._activate(ids)
        task = asyncio.get_running_loop().create_task(flush, context=contextvars.Context())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _activate(self, ids: list[str]) -> None:
        free = self.limits.concurrency - len(self._executions)
        try:
            if self.execute and self.accepting and free > 0 and self._isolated is None:
                # Activate and claim in one write: this process runs what it accepted.
                claimed = await self.store.start(self.worker, ids, self.lease, free)
                for item in claimed:
                    self._spawn(item)
                if len(claimed) == len(ids):
                    return
            else:
                await self.store.activate(ids)
        except StoreError as exc:
            logger.error("backbeat: cannot activate %d task(s) (they run later): %s", len(ids), exc)
        self._backlog = True  # some wait for a slot, a delay or an earlier task
        self._poke()

    def _complete_soon(self, task_id: str) -> None:
        if not self._to_complete:
            asyncio.get_running_loop().call_soon(self._flush_completions)
        self._to_complete.append(task_id)

    def _flush_completions(self) -> None:
        ids, self._to_complete = self._to_complete, []
        task = asyncio.get_running_loop().create_task(
            self._complete(ids), context=contextvars.Context()
        )
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _complete(self, ids: list[str]) -> None:
        try:
            held = await self.store.complete(self.worker, ids)
        except StoreError as exc:
            logger.error("backbeat: cannot record %d success(es): %s", len(ids), exc)
            return
        for task_id, kept in zip(ids, held, strict=True):
            if not kept:
                logger.warning(
                    "backbeat: task %s finished after its lease was lost; outcome ignored", task_id
                )

    def _spawn(self, item: ClaimedTask) -> None:
        context = self._contexts.pop(item.id, None) or contextvars.Context()
        context.run(current_runner.set, None)
        execution = asyncio.get_running_loop().create_task(
            self._execute(item), name=f"task {item.name!r} (id {item.id})", context=context
        )
        self._executions[item.id] = execution

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    # --- running -------------------------------------------------------------------------

    async def start(self) -> None:
        self.register_declared()
        self.accepting = True
        self._wake = asyncio.Event()
        if self.execute:
            loop = asyncio.get_running_loop()
            # The engine's own loops run outside any request's context.
            context = contextvars.Context()
            self._loops = [
                loop.create_task(self._claim_loop(), context=context),
                loop.create_task(self._purge_loop(), context=context.copy()),
            ]
            self._loop = loop
            self._keeper = LeaseKeeper(
                self.store,
                self.worker,
                self.lease,
                running=lambda: list(self._executions),
                describe=self._running_on_loop,
            )
            self._keeper.start(loop)

    async def _claim_loop(self) -> None:
        assert self._wake is not None
        failures = 0
        while self.accepting:
            free = self.limits.concurrency - len(self._executions)
            claimed: list[ClaimedTask] = []
            if self._isolated is None and free > 0:
                try:
                    claimed = await self._claim(free)
                    failures = 0
                except Exception as exc:
                    # Whatever went wrong (a store error, a bug), the worker keeps claiming.
                    failures += 1
                    await self._back_off("claim tasks", exc, failures)
                    continue
            for item in claimed:
                self._spawn(item)
            if self._isolated is None and (free <= 0 or len(claimed) == free):
                self._backlog = True  # there may be more waiting than we could take
                if claimed:
                    continue
            else:
                self._backlog = self._isolated is not None
            self._wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), await self._idle_wait())

    async def _claim(self, free: int) -> list[ClaimedTask]:
        """Claim work; a task whose lease was lost before runs alone, on an idle worker.

        So a task that kills or hangs its worker takes no other task down with it
        more than once, and after `max_lost_leases` losses it is dead-lettered.
        """
        claimed = await self.store.claim(
            self.worker,
            free,
            self.lease,
            max_lost=self.max_lost_leases,
            alone_first=not self._executions,
        )
        if len(claimed) == 1 and claimed[0].lost >= 2:
            suspect = claimed[0]
            self._isolated = suspect.id
            logger.warning(
                "backbeat: task %r (id %s) lost its lease %d time(s) (its worker died or "
                "hung); worker %s runs it alone",
                suspect.name,
                suspect.id,
                suspect.lost - 1,
                self.worker,
            )
        return claimed

    async def _idle_wait(self) -> float:
        """How long to wait for a wake-up: until the next delay or retry is due, at most
        `poll_interval` (tasks written by other processes are seen by polling)."""
        try:
            due = await self.store.next_due()
        except Exception as exc:
            logger.debug("backbeat: cannot read the next due time: %s", exc)
            return self.poll_interval
        if due is None:
            return self.poll_interval
        return min(self.poll_interval, max(due - time.time(), 0.0) + 0.001)

    async def _back_off(self, what: str, exc: Exception, failures: int) -> None:
        wait = min(0.05 * 2**failures, 5.0)
        logger.error(
            "backbeat: worker %s cannot %s (failure %d in a row; trying again in %.2fs): %s: %s",
            self.worker,
            what,
            failures,
            wait,
            type(exc).__name__,
            exc,
            exc_info=not isinstance(exc, StoreError),
        )
        await asyncio.sleep(wait)

    def _running_on_loop(self) -> str:
        """What the worker's event loop is running now (asked from the lease keeper's thread)."""
        assert self._loop is not None
        current = asyncio.current_task(self._loop)
        if current is not None and current in self._executions.values():
            return current.get_name()
        return "code outside backbeat's tasks"

    async def _purge_loop(self) -> None:
        ttl = self.limits.finished_ttl
        while True:
            await asyncio.sleep(min(ttl, 60.0) or 60.0)
            try:
                await self.store.purge(time.time() - ttl, ("succeeded", "cancelled"))
            except Exception as exc:
                await self._back_off("purge finished tasks", exc, 1)

    async def _execute(self, item: ClaimedTask) -> None:
        try:
            try:
                func, args, kwargs = self._resolve(item)
            except _Unrunnable as exc:
                await self._unrunnable(item, str(exc))
                return
            call = enforce_async_callable(func)
            policy = TaskPolicy(
                retries=item.retries,
                backoff=item.backoff,
                max_backoff=item.max_backoff,
                timeout=item.timeout,
            )
            attempt = Attempt(
                item.id,
                item.name,
                item.attempts,
                item.created_at,
                policy,
                lost=item.lost,
                error=item.error,
            )
            await run_attempt(attempt, call, args, kwargs, self.hooks, self._record)
        finally:
            self._executions.pop(item.id, None)
            if self._isolated == item.id:
                self._isolated = None
            if self._backlog:
                self._poke()  # a slot is free, or a task it came before may now run

    def _resolve(self, item: ClaimedTask) -> tuple[Callable[..., Any], list[Any], dict[str, Any]]:
        func = self.registry.get(item.name)
        if func is None:
            raise _Unrunnable(
                f"unknown task {item.name!r}: this app registered no function by that "
                "name (@task, a route's background=, or runner.register); "
                f"it knows {len(self.registry)} task name(s)"
            )
        try:
            args, kwargs = decode_arguments(func, item.payload)
        except ArgumentError as exc:
            raise _Unrunnable(str(exc)) from None
        return func, list(args), kwargs

    async def _unrunnable(self, item: ClaimedTask, error: str) -> None:
        """Dead-letter a stored task this process cannot run, and keep going."""
        logger.error("Background task %r (id %s) cannot run: %s", item.name, item.id, error)
        await self._settle(self.store.fail(self.worker, item.id, error, None, None))
        now = time.time()
        attempt = Attempt(item.id, item.name, item.attempts, item.created_at, DEFAULT_POLICY)
        info = task_info(attempt, TaskState.FAILED, now, error, now)
        report_failure(self.hooks, info, _Unrunnable(error))

    def _record(self, attempt: Attempt, outcome: Outcome) -> Awaitable[None] | None:
        if outcome.state is TaskState.SUCCEEDED:
            self._complete_soon(attempt.id)
            return None
        retry_at = None
        if outcome.retry_in is not None:
            retry_at = time.time() + outcome.retry_in
            self._poke()  # the claim loop's next wake-up may now be sooner
        return self._settle(
            self.store.fail(
                self.worker, attempt.id, outcome.error or "", outcome.traceback, retry_at
            )
        )

    async def _settle(self, write: Awaitable[bool]) -> None:
        try:
            held = await write
        except StoreError as exc:
            logger.error("backbeat: cannot record a task's outcome: %s", exc)
            return
        if held is False:
            logger.warning("backbeat: a task finished after its lease was lost; outcome ignored")

    async def drain(self) -> None:
        self.accepting = False
        self._poke()
        if self._loops:
            # Let the claim loop finish its round: cancelling a claim midway would
            # leave the tasks it took leased to us until the lease runs out.
            await asyncio.wait([self._loops[0]], timeout=self.limits.shutdown_timeout)
        if self._executions:
            await asyncio.wait(self._executions.values(), timeout=self.limits.shutdown_timeout)
        left = list(self._executions)
        for execution in self._executions.values():
            execution.cancel()
        if self._executions:
            await asyncio.gather(*self._executions.values(), return_exceptions=True)
        await asyncio.sleep(0)  # let the last completions flush
        if self._background:
            await asyncio.gather(*self._background, return_exceptions=True)
        for loop_task in self._loops:
            loop_task.cancel()
        await asyncio.gather(*self._loops, return_exceptions=True)
        self._loops = []
        if self._keeper is not None:
            await asyncio.to_thread(self._keeper.stop)
            self._keeper = None
        if left:
            try:
                await self.store.release(self.worker, left)
            except StoreError as exc:
                logger.error("backbeat: cannot release unfinished tasks: %s", exc)
                return
            logger.warning(
                "backbeat runner: %d task(s) not finished within shutdown_timeout=%.1fs were "
                "released to the store, to run later: %s",
                len(left),
                self.limits.shutdown_timeout,
                ", ".join(left),
            )

    # --- looking -------------------------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo | None:
        status = self.store.get_sync(task_id)
        return None if status is None else status.info(time.time())

    async def aget(self, task_id: str) -> TaskInfo | None:
        status = await self.store.get(task_id)
        return None if status is None else status.info(time.time())

    def stats(self) -> dict[str, int]:
        return self.store.counts_sync()

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


class _Unrunnable(Exception):
    """The stored task cannot run in this process: dead-letter it, keep going."""


def _json_ids(ids: list[str]) -> str | None:
    if not ids:
        return None
    return "[" + ",".join(f'"{task_id}"' for task_id in ids) + "]"
