"""The executing half of the stored feeder: claim tasks from the store, run them, record.

A `StoredWorker` runs in every process whose runner executes (the app by
default, and ``backbeat worker``): a claim loop that takes runnable tasks under
a lease while there are free slots and otherwise sleeps until it is poked (a
task written or finished here) or until the next delay or retry is due, at
most ``poll_interval`` (for tasks written by other processes); a lease keeper
thread (`engine.leases`); a purge loop for finished tasks. Each claimed task's
attempt runs in `engine.execution`; its outcome is written back (successes
batched per loop turn). A task whose lease was lost before runs alone. On
drain, what has not finished within ``shutdown_timeout`` is released to the
store, the attempt not counted.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import socket
import time

from backbeat.concurrency import enforce_async_callable
from backbeat.engine.claims import (
    Unrunnable,
    WrittenHere,
    attempt_of,
    resolve,
    settlement_for,
)
from backbeat.engine.execution import (
    Attempt,
    Hooks,
    Outcome,
    report_failure,
    run_attempt,
    task_info,
)
from backbeat.engine.health import WorkerHealth
from backbeat.engine.leases import LeaseKeeper
from backbeat.engine.limits import Limits
from backbeat.engine.reports import ProgressReports, Settlements
from backbeat.engine.takeover import grace, take_over_dead
from backbeat.ids import new_id
from backbeat.logs import about_task
from backbeat.policy import DEFAULT_POLICY
from backbeat.processes import this_process
from backbeat.registry import TaskRegistry
from backbeat.status import CANCELLED, FAILED
from backbeat.stores.base import (
    ClaimedTask,
    Settlement,
    Store,
    StoreError,
    WorkerInfo,
)
from backbeat.tasks import current_runner

logger = logging.getLogger("backbeat")

# The longest a loop waits before trying the store again (it doubles from 0.1 s).
MAX_BACK_OFF = 5.0


class StoredWorker:
    """Claims and runs a store's tasks in this process."""

    def __init__(
        self,
        store: Store,
        registry: TaskRegistry,
        limits: Limits,
        hooks: Hooks,
        *,
        lease: float,
        poll_interval: float,
        max_lost_leases: int,
        written_here: dict[str, WrittenHere],
        queues: tuple[str, ...] | None = None,
        signing_key: bytes | None = None,
        max_task_size: int | None = None,
    ) -> None:
        self.store = store
        self.signing_key = signing_key
        self.max_task_size = max_task_size  # stored tasks over it are refused, not decoded
        self.registry = registry
        self.limits = limits
        self.hooks = hooks
        self.lease = lease
        self.poll_interval = poll_interval
        self.max_lost_leases = max_lost_leases
        self.queues = queues  # None: every queue
        self.name = _worker_name()
        # Tasks this process wrote: claimed here, they run in their request's context.
        self.written_here = written_here
        self.executions: dict[str, asyncio.Task[None]] = {}
        self.receipts: dict[str, str] = {}  # id -> the claim it runs under
        # Running tasks to stop: cancelled by someone, or their lease was lost.
        self._stopping: set[str] = set()
        # A task whose lease was lost before runs alone: while it runs, nothing is claimed.
        self.isolated: str | None = None
        # Tasks may be waiting that a finishing task could let run: look when one ends.
        self.backlog = False
        self.claiming = False
        # A sequence's next step, or a retry, may be runnable once an outcome is recorded.
        self._settlements = Settlements(store, lease, recorded=self.poke)
        # The soonest retry this worker scheduled (wall clock): its wait ends then at the
        # latest, whatever the store's wait, started before the retry existed, waits for.
        self._retry_at: float | None = None
        self._reports = ProgressReports(store)
        # The claim loop waits for the store (one wait at a time, kept across pokes) or a poke.
        self._store_wait: asyncio.Task[None] | None = None
        self._poke: asyncio.Future[None] | None = None
        self.started_at = 0.0
        self.turned_at = 0.0  # the claim loop's last turn (monotonic; read by `health`)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loops: list[asyncio.Task[None]] = []
        self._keeper: LeaseKeeper | None = None

    @property
    def free(self) -> int:
        """Slots free for claims now (none while a task runs alone)."""
        if self.isolated is not None or not self.claiming:
            return 0
        return self.limits.concurrency - len(self.executions)

    def poke(self) -> None:
        """Look for work now: a slot came free, or a retry is due sooner than we wait."""
        if self._poke is not None and not self._poke.done():
            self._poke.set_result(None)

    async def start(self) -> None:
        # On record before the first claim, and what a dead process held is taken over
        # before this one claims anything (the lease keeper goes on doing both).
        self.started_at = time.time()
        # Named as it starts, not when made: the app module (and its runner) may be
        # imported before its server forks (gunicorn --preload): each child is a worker.
        self.name = _worker_name()
        await self.store.heartbeat(self.info(), grace(self.lease))
        # Silence is judged later, by the lease keeper: a process that has just connected
        # (perhaps after the store was down for everyone) cannot tell it from a stall.
        if await take_over_dead(self.store, self.name, judge_silence=False):
            self.backlog = True
        try:
            await self.store.warm_up(self.queues)
        except Exception as exc:  # only a head start: the claims work without it
            logger.warning(
                "backbeat: worker %s could not warm up its store: %s",
                self.name,
                exc,
                exc_info=not isinstance(exc, StoreError),
            )
        loop = self._loop = asyncio.get_running_loop()
        self._poke = loop.create_future()
        self.claiming = True
        # The worker's own loops run outside any request's context.
        context = contextvars.Context()
        self._loops = [
            loop.create_task(self._claim_loop(), context=context),
            loop.create_task(self._purge_loop(), context=context.copy()),
        ]
        self._keeper = LeaseKeeper(
            self.store,
            self.name,
            self.lease,
            # Also those of finished tasks whose outcome is not written yet.
            receipts=lambda: list({*self.receipts.values(), *self._settlements.unrecorded()}),
            running=lambda: list(self.receipts.values()),
            stop=lambda ids: loop.call_soon_threadsafe(self._stop, ids),
            describe=self._running_on_loop,
            worker_info=self.info,
            taken_over=lambda: loop.call_soon_threadsafe(self.poke),
        )
        self._keeper.start(loop)

    def info(self) -> WorkerInfo:
        """What this worker reports about itself (`Store.heartbeat`)."""
        process = this_process()
        return WorkerInfo(
            name=self.name,
            host=socket.gethostname(),
            pid=process.pid,
            queues=self.queues,
            concurrency=self.limits.concurrency,
            running=len(self.executions),
            started_at=self.started_at,
            machine=process.machine,
            process_started=process.started,
        )

    def health(self, now: float | None = None) -> WorkerHealth:
        """Whether the loop, the lease keeper and the claim loop beat (`engine.health`);
        `now` is a `time.monotonic()` reading."""
        now = time.monotonic() if now is None else now
        keeper = self._keeper
        claim_loop_idle = max(now - self.turned_at, 0.0)
        loop_blocked = 0.0 if keeper is None else keeper.loop_blocked(now)
        problems = []
        if keeper is None or not self.claiming:
            problems.append("the worker is not running (starting, or stopping)")
        else:
            if not keeper.alive:
                problems.append("the lease keeper's thread has stopped")
            elif now - keeper.ticked_at > self.lease:
                problems.append(
                    f"the lease keeper has not ticked for {now - keeper.ticked_at:.1f}s"
                )
            if loop_blocked > keeper.warn_after:
                problems.append(
                    f"the event loop has been blocked for {loop_blocked:.1f}s "
                    f"by {self._running_on_loop()}"
                )
            if self._loops[0].done():
                problems.append("the claim loop has stopped")
            elif claim_loop_idle > self.poll_interval + self.lease + MAX_BACK_OFF:
                problems.append(f"the claim loop has not turned for {claim_loop_idle:.1f}s")
        return WorkerHealth(
            self.name, len(self.executions), loop_blocked, claim_loop_idle, tuple(problems)
        )

    # --- claiming ------------------------------------------------------------------------

    async def _claim_loop(self) -> None:
        failures = 0
        while self.claiming:
            self.turned_at = time.monotonic()
            free = self.free
            claimed: list[ClaimedTask] = []
            if free > 0:
                try:
                    claimed = await self._claim(free)
                    failures = 0
                except Exception as exc:
                    # Whatever went wrong (a store error, a bug), the worker keeps claiming.
                    failures += 1
                    await self._back_off("claim tasks", exc, failures)
                    continue
            for item in claimed:
                self.spawn(item)
            if self.isolated is None and (free <= 0 or len(claimed) == free):
                self.backlog = True  # there may be more waiting than we could take
                if claimed:
                    continue
            else:
                self.backlog = self.isolated is not None
            await self._wait()

    async def _wait(self) -> None:
        """Until the store may have work (`Store.wait`: a write here, a task falling due,
        at most `poll_interval`) or `poke` (a slot came free)."""
        assert self._loop is not None and self._poke is not None
        if self._poke.done():
            self._poke = self._loop.create_future()
            return
        if self._store_wait is None:
            self._store_wait = self._loop.create_task(self.store.wait(self.poll_interval))
        timeout = None
        if self._retry_at is not None:
            timeout = self._retry_at - time.time() + 0.001
            if timeout <= 0:  # due already: the claim that just ran saw it
                self._retry_at = None
                timeout = None
        await asyncio.wait(
            (self._store_wait, self._poke), timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if self._poke.done():
            self._poke = self._loop.create_future()
        if self._store_wait.done():
            failed = self._store_wait.exception()
            self._store_wait = None
            if isinstance(failed, Exception):
                await self._back_off("wait for work", failed, 1)

    async def _claim(self, free: int) -> list[ClaimedTask]:
        """Claim work; a task whose lease was lost before runs alone, on an idle worker.

        So a task that kills or hangs its worker takes no other task down with it
        more than once, and after `max_lost_leases` losses it is dead-lettered.
        """
        claimed = await self.store.claim(
            self.name,
            free,
            self.lease,
            max_lost=self.max_lost_leases,
            alone_first=not self.executions,
            queues=self.queues,
        )
        if len(claimed) == 1 and claimed[0].lost >= 2:
            suspect = claimed[0]
            self.isolated = suspect.id
            logger.warning(
                "backbeat: task %r (id %s) lost its lease %d time(s) (its worker died or "
                "hung); worker %s runs it alone",
                suspect.name,
                suspect.id,
                suspect.lost - 1,
                self.name,
                extra=about_task(suspect.id, suspect.name, suspect.attempts, suspect.queue),
            )
        return claimed

    async def _back_off(self, what: str, exc: Exception, failures: int) -> None:
        wait = min(0.05 * 2**failures, MAX_BACK_OFF)
        logger.error(
            "backbeat: worker %s cannot %s (failure %d in a row; trying again in %.2fs): %s: %s",
            self.name,
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
        if current is not None and current in self.executions.values():
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

    # --- running -------------------------------------------------------------------------

    def spawn(self, item: ClaimedTask) -> None:
        if self._settlements.again_under(item.id, item.receipt):
            logger.warning(
                "backbeat: task %r (id %s) finished here but its outcome was not recorded "
                "before its lease ran out; claimed again, it is recorded, not run again",
                item.name,
                item.id,
                extra=about_task(item.id, item.name, item.attempts, item.queue),
            )
            return
        here = self.written_here.pop(item.id, None)
        context = contextvars.Context() if here is None else here.context
        context.run(current_runner.set, None)
        execution = asyncio.get_running_loop().create_task(
            self._execute(item, here), name=f"task {item.name!r} (id {item.id})", context=context
        )
        self.executions[item.id] = execution
        self.receipts[item.id] = item.receipt

    def _stop(self, ids: list[str]) -> None:
        """Cancel running tasks the store says to stop (cancelled, or the lease was lost)."""
        for task_id in ids:
            execution = self.executions.get(task_id)
            if execution is not None and task_id not in self._stopping:
                self._stopping.add(task_id)
                execution.cancel()

    async def _execute(self, item: ClaimedTask, here: WrittenHere | None) -> None:
        try:
            try:
                func, args, kwargs = resolve(
                    self.registry, item, self.signing_key, here, self.max_task_size
                )
            except Unrunnable as exc:
                await self._unrunnable(item, str(exc))
                return
            attempt = attempt_of(item)
            call = enforce_async_callable(func)
            try:
                await run_attempt(
                    attempt,
                    call,
                    args,
                    kwargs,
                    self.hooks,
                    self._record,
                    reporter=self._reports.reporter(item.receipt),
                )
            except asyncio.CancelledError:
                if item.id not in self._stopping:
                    raise  # the drain: it releases the task
                # Cancelled through the store (or its lease is gone: then this is ignored).
                logger.warning(
                    "Background task %r (id %s) cancelled",
                    item.name,
                    item.id,
                    extra=about_task(item.id, item.name, item.attempts, item.queue),
                )
                self._settlements.add(Settlement(item.receipt, CANCELLED))
        finally:
            self._stopping.discard(item.id)
            self.executions.pop(item.id, None)
            self.receipts.pop(item.id, None)
            if self.isolated == item.id:
                self.isolated = None
            if self.backlog:
                self.poke()  # a slot is free, or a task it came before may now run

    async def _unrunnable(self, item: ClaimedTask, error: str) -> None:
        """Dead-letter a stored task this process cannot run, and keep going."""
        logger.error(
            "Background task %r (id %s) cannot run: %s",
            item.name,
            item.id,
            error,
            extra=about_task(item.id, item.name, item.attempts, item.queue),
        )
        self._settlements.add(Settlement(item.receipt, FAILED, error=error))
        now = time.time()
        attempt = Attempt(item.id, item.name, item.attempts, item.created_at, DEFAULT_POLICY)
        report_failure(self.hooks, task_info(attempt, FAILED, now, error, now), Unrunnable(error))

    def _record(self, attempt: Attempt, outcome: Outcome) -> None:
        settlement = settlement_for(self.receipts[attempt.id], attempt, outcome)
        self._settlements.add(settlement)
        if settlement.retry_at is not None and (
            self._retry_at is None or settlement.retry_at < self._retry_at
        ):
            self._retry_at = settlement.retry_at

    # --- stopping ------------------------------------------------------------------------

    async def drain(self) -> None:
        """Stop claiming; give running tasks `shutdown_timeout`; release the rest."""
        self.claiming = False
        self.poke()
        shutdown_timeout = self.limits.shutdown_timeout
        if self._loops:
            # Let the claim loop finish its round: cancelling a claim midway would
            # leave the tasks it took leased to us until the lease runs out.
            await asyncio.wait([self._loops[0]], timeout=shutdown_timeout)
        if self.executions:
            await asyncio.wait(self.executions.values(), timeout=shutdown_timeout)
        left_ids = list(self.executions)
        left = [self.receipts[task_id] for task_id in left_ids]
        for execution in self.executions.values():
            execution.cancel()
        if self.executions:
            await asyncio.gather(*self.executions.values(), return_exceptions=True)
        await self._reports.settle()
        await self._settlements.settle()
        waiting = [] if self._store_wait is None else [self._store_wait]
        for loop_task in [*self._loops, *waiting]:
            loop_task.cancel()
        await asyncio.gather(*self._loops, *waiting, return_exceptions=True)
        self._store_wait = None
        self._loops = []
        if self._keeper is not None:
            await asyncio.to_thread(self._keeper.stop)
            self._keeper = None
        if left:
            try:
                await self.store.release(left)
            except StoreError as exc:
                logger.error("backbeat: cannot release unfinished tasks: %s", exc)
                return
            logger.warning(
                "backbeat runner: %d task(s) not finished within shutdown_timeout=%.1fs were "
                "released to the store, to run later: %s",
                len(left),
                shutdown_timeout,
                ", ".join(left_ids),
            )


def _worker_name() -> str:
    """host:pid:random, unique per run."""
    return f"{socket.gethostname()}:{os.getpid()}:{new_id()[-6:]}"
