"""What a durable store keeps, and the operations a runner needs from one.

A stored task is a named function plus its arguments as JSON (see
`backbeat.serialization`), its policy, and its progress. A store hands tasks
out under a *lease*: a worker that claims a task owns it until the lease
expires, renews the lease while the task runs, and reports the outcome. A
task whose worker died is claimed again once its lease has expired, so
execution is at-least-once.

A store keeps a task in one of the `StoredState`s; a reader is shown its `TaskState`,
which `shown_state` alone maps from the stored state and the due time
(`backbeat.stores.states`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic_core import from_json

from backbeat.status import FINISHED, TaskInfo, TaskState
from backbeat.stores.states import shown_state

if TYPE_CHECKING:  # for the signatures of `Store`: that module imports this one
    from backbeat.stores.inspection import (
        AttemptRecord,
        FailureGroup,
        GateUsage,
        TaskFilter,
        TaskPage,
    )


@dataclass(slots=True)
class NewTask:
    """A task to enqueue."""

    id: str
    name: str
    payload: str  # {"args": [...], "kwargs": {...}} as JSON
    created_at: float
    due_at: float
    retries: int = 0
    backoff: float = 1.0
    max_backoff: float = 60.0
    timeout: float | None = None
    # Ids of tasks that must finish first (a sequence's earlier members).
    after: tuple[str, ...] = ()
    # Written ahead of a response: not runnable until activated, or until this time
    # passes (the process that wrote it died before it could activate it).
    held_until: float | None = None
    queue: str = "default"
    priority: int = 0  # higher first
    # Idempotency: while a task with this key is held, pending or running, enqueue
    # adds nothing and returns that task's id.
    key: str | None = None
    # Gates (`backbeat.gates`; the store enforces them when it starts the task, see
    # `Store.claim`): at most `rate_limit` starts of tasks with this `rate_gate` in any
    # `rate_window` seconds, and at most `max_concurrency` tasks with this
    # `concurrency_gate` running at once. A gated task waits in the line of its gates.
    rate_gate: str | None = None
    rate_limit: int = 0
    rate_window: float = 0.0
    concurrency_gate: str | None = None
    max_concurrency: int = 0

    @property
    def line(self) -> str | None:
        """The line it waits in: one per queue and pair of gates (None: it is not gated)."""
        if self.rate_gate is None and self.concurrency_gate is None:
            return None
        return f"{self.queue}\t{self.rate_gate or ''}\t{self.concurrency_gate or ''}"


@dataclass(slots=True)
class ClaimedTask:
    """A task a worker now holds under a lease."""

    id: str
    name: str
    payload: str
    attempts: int  # including this one
    created_at: float
    retries: int
    backoff: float
    max_backoff: float
    timeout: float | None
    # How many times a worker lost this task's lease while running it (died, hung).
    lost: int = 0
    error: str | None = None  # how the previous attempt failed, if one did
    queue: str = "default"
    # Opaque to the engine: names this claim (this task, this attempt). `renew`,
    # `finish` and `release` take it, so a worker whose lease expired and was
    # claimed again elsewhere cannot settle the task any more (fencing).
    receipt: str = ""


@dataclass(slots=True)
class Settlement:
    """How an attempt ended, for `Store.finish`: the state the task moves to."""

    receipt: str
    # SUCCEEDED, SCHEDULED (retry at `retry_at`), FAILED (dead letter) or CANCELLED (its
    # worker stopped it: asked to by `Store.cancel`)
    state: TaskState
    result: str | None = None  # the return value as JSON, for SUCCEEDED
    error: str | None = None
    traceback: str | None = None
    retry_at: float | None = None


@dataclass(slots=True)
class WorkerInfo:
    """A worker process as it reports itself (`Store.heartbeat`), for operators and dashboards."""

    name: str  # host:pid:random, unique per run
    host: str
    pid: int
    queues: tuple[str, ...] | None  # None: every queue
    concurrency: int
    running: int  # tasks it runs now
    started_at: float
    seen_at: float = 0.0  # set by the store
    # Where `pid` names this process, and when the process started (seconds after boot, as
    # the kernel counts: `backbeat.processes`):
    # another process on the same machine can tell at once that it is gone.
    machine: str = ""
    process_started: float = 0.0
    expires_at: float = 0.0  # set by the store: taken for dead after this

    def document(self) -> dict[str, object]:
        return {
            "name": self.name,
            "host": self.host,
            "pid": self.pid,
            "queues": None if self.queues is None else list(self.queues),
            "concurrency": self.concurrency,
            "running": self.running,
            "started_at": self.started_at,
            "seen_at": self.seen_at,
            "machine": self.machine,
            "process_started": self.process_started,
        }

    @classmethod
    def from_document(cls, document: dict[str, Any], expires_at: float = 0.0) -> WorkerInfo:
        queues = document.get("queues")
        known = {
            name: document[name]
            for name in cls.__dataclass_fields__
            if name in document and name != "expires_at"
        }
        known["queues"] = None if queues is None else tuple(queues)
        return cls(**known, expires_at=expires_at)


@dataclass(slots=True)
class ScheduleRecord:
    """What a store keeps of a periodic task (`backbeat.schedules`): the rule it last ran
    by, the latest tick handled, and whether it is paused."""

    name: str
    rule: str  # `Rule.text`: "cron */5 * * * * Europe/Berlin", "every 60s"
    last_tick: int | None = None  # seconds since the epoch
    last_task: str | None = None  # the id of the task the latest enqueued tick made
    # What was done at `last_tick`: "enqueued", "paused", or "skipped: <why>".
    note: str | None = None
    paused: bool = False
    updated_at: float = 0.0


# The note of a tick skipped by `skip_if_running` (`Store.fire_schedule`).
STILL_RUNNING = "skipped: the previous run was not finished"


@dataclass(slots=True)
class StoredStatus:
    """A stored task as `Store.get` and `Store.list_tasks` give it; `info()` is its `TaskInfo`."""

    id: str
    name: str
    # A `StoredState`'s value, as stores read it back (the dashboard's view of a runner
    # without a store makes these of its `TaskInfo`s: shown states, `scheduled` among them).
    state: str
    attempts: int
    error: str | None
    traceback: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    due_at: float
    result: str | None = None  # JSON
    progress: str | None = None  # JSON: the latest report
    queue: str = "default"
    payload: str | None = None  # the arguments, as JSON
    worker: str | None = None  # who runs it, or ran it last
    priority: int = 0
    # The ids of the tasks it runs after (a sequence's earlier members); `get` fills it,
    # lists and searches leave it empty.
    after: tuple[str, ...] = ()

    def info(self, now: float) -> TaskInfo:
        return TaskInfo(
            result=None if self.result is None else from_json(self.result),
            progress=None if self.progress is None else from_json(self.progress),
            queue=self.queue,
            id=self.id,
            name=self.name,
            state=shown_state(self.state, self.due_at, now),
            attempts=self.attempts,
            error=self.error,
            created_at=_utc(self.created_at),
            started_at=None if self.started_at is None else _utc(self.started_at),
            finished_at=None if self.finished_at is None else _utc(self.finished_at),
        )


def after_json(after: tuple[str, ...]) -> str | None:
    """`NewTask.after` as the SQLite and Redis stores keep it: a JSON list, None for none."""
    return json.dumps(after) if after else None


def after_ids(stored: str | None) -> tuple[str, ...]:
    """`after_json`'s text, decoded; () when there is none or it cannot be read."""
    try:
        ids = from_json(stored) if stored else []
    except ValueError:
        return ()
    if not isinstance(ids, list):
        return ()
    return tuple(i for i in ids if isinstance(i, str))


def _utc(timestamp: float) -> datetime:
    return datetime.fromtimestamp(timestamp, UTC)


def check_purgeable(states: tuple[str, ...]) -> None:
    """`Store.purge` deletes finished tasks only: ValueError for any other state."""
    unknown = set(states) - set(FINISHED)
    if unknown:
        raise ValueError(f"only finished tasks can be purged, not {sorted(unknown)}")


def lost_leases_error(max_lost: int) -> str:
    """The error of a task `Store.claim` dead-letters because its lease was lost `max_lost`
    times: the one text every store writes (SQL and Lua receive it as a parameter)."""
    return (
        f"its worker died or hung each time it ran it: the lease was lost {max_lost} times "
        f"(max_lost_leases={max_lost}); dead-lettered. Retry it (backbeat retry) once the "
        "cause is fixed."
    )


def receipt_for(task_id: str, attempt: int) -> str:
    """The receipt of SQL-like stores (SQLite, memory, PostgreSQL): id and attempt number."""
    return f"{task_id}:{attempt}"


def split_receipt(receipt: str) -> tuple[str, int]:
    task_id, _, attempt = receipt.rpartition(":")
    return task_id, int(attempt)


class GatedShare:
    """How many of a claim's slots go first to tasks with limits (`Store.claim`).

    Tasks whose gates are open and other tasks share a claim: the gated ones take half of
    it first (rounded up and down in turn, so that one-slot claims alternate), the others
    the rest, then the gated ones what the others left. So neither kind starves the other,
    whatever their backlog; within each kind, priority and due time order them.
    """

    def __init__(self) -> None:
        self._round_up = 1

    def next(self, limit: int) -> int:
        share = (limit + self._round_up) // 2
        self._round_up ^= 1
        return share


class StoreError(Exception):
    """The store cannot be opened or used (bad URL, unreadable file, corrupt data)."""


class StoreUnavailable(StoreError):
    """The store cannot take writes now (gone, full, unreachable); a later try may work."""


class StoreMissing(StoreError):
    """A store was to be read, but there is none at that place (nothing was created)."""


class DuplicateTask(StoreError):
    """A write named a task id that is stored already, or twice: none of its tasks was
    stored (`Store.enqueue`). Not a store that is down: the same write fails again."""

    def __init__(self, task_id: str) -> None:
        super().__init__(f"a task with id {task_id} is stored already")
        self.task_id = task_id


class Store(Protocol):
    """The operations the runner, the workers and the CLI use.

    Every operation is a coroutine. Nothing connects in a constructor: `open` does,
    and a store must also open itself when an operation is called first (a runner
    that was never started reads and writes through a store nobody opened).
    Writes that take lists take them in one atomic write (one transaction, one
    script, one pipeline): the engine batches what one turn of its event loop made.
    A store object may be bound to the event loop it was opened on (a network
    client's pool is); `twin` gives a handle for another thread's loop.
    """

    async def open(self) -> None:
        """Connect, and create the schema if it is missing; idempotent, also after `close`.

        Raises `StoreMissing` when the store was made with ``create=False`` and there is
        none, `StoreError` when it cannot be used (bad place, corrupt data), and
        `StoreUnavailable` when it cannot be reached now."""

    async def close(self) -> None:
        """Release connections and threads; `open` (or any operation) opens it again."""

    def twin(self) -> Store:
        """A handle on the same data for use from another thread's event loop (the lease
        keeper's, sync callers'), unopened; this very object when it is bound to no loop."""
        ...

    async def enqueue(self, tasks: list[NewTask]) -> list[str]:
        """Store these tasks in one atomic write; returns their ids — for a task whose
        `key` a live task already has, that task's id (and nothing is added).

        Raises `DuplicateTask` (and stores none of them) when an id is stored already or
        repeated in `tasks`. Writes grouped with others fail alone."""
        ...

    async def activate(self, ids: list[str]) -> None:
        """Make tasks written ahead (`held_until`) runnable."""

    async def activate_and_claim(
        self, worker: str, ids: list[str], lease: float, limit: int
    ) -> list[ClaimedTask]:
        """`activate`, then claim at once those of these tasks that can run now (up to
        `limit`): the process that wrote them runs them, in the same write. Gated tasks
        are only activated (into their lines): a `claim` starts them."""
        ...

    async def claim(
        self,
        worker: str,
        limit: int,
        lease: float,
        *,
        max_lost: int = 3,
        alone_first: bool = False,
        queues: tuple[str, ...] | None = None,
    ) -> list[ClaimedTask]:
        """Lease up to `limit` runnable tasks of these `queues` (None: any), highest
        priority first, then soonest due, counting the attempt.

        Runnable: pending and due with every task it comes after finished; held
        past its hold; or running with an expired lease and never lost before
        (the lease is lost: counted in `lost`). First, every running task with
        an expired lease that would reach `max_lost` losses is dead-lettered, with
        `lost_leases_error` as its error, in the same write.
        With ``alone_first`` (an idle worker), a task lost before, if one is
        waiting, is claimed instead, alone: it comes back with ``lost >= 2``.

        Gated tasks (`NewTask.line`) are not runnable this way: each waits in its line,
        ordered by priority (higher first), due time, id, and the claim takes the first
        of a line only while its gates are open, atomically, on the store's clock:

        * a rate gate is open while fewer than ``rate_limit`` tasks of it started in the
          last ``rate_window`` seconds (a log of start times: exact, a burst of up to
          ``rate_limit`` at once is allowed); every start counts, retries included;
        * a concurrency gate is open while fewer than ``max_concurrency`` tasks of it
          are running. A slot is freed when the task finishes, is scheduled for a retry,
          released or cancelled, and when its lease runs out (or its worker is taken
          over, `take_over`): a running gated task whose lease expired goes back to the
          front of its line (its loss counted in `lost`, dead-lettered at `max_lost`
          as any task) instead of being claimed directly, so it never runs next to
          another holder of its slot. Gated tasks are never claimed ``alone_first``.

        Gated tasks are taken before the others (they are limited anyway), up to `limit`
        in all; a closed gate holds only its own line back. `wait` ends when a rate
        gate with waiting tasks opens.
        """
        ...

    async def wait(self, timeout: float) -> None:  # noqa: ASYNC109 - one bound, any store
        """Return when new work may be runnable, at the latest after `timeout` seconds.

        Early: a task written, activated, released or retried through this store in
        this process, or the soonest delayed or retried task falling due (SQLite and
        memory: an in-process signal, the rest is seen by the caller's polling;
        Redis: a blocking stream read; PostgreSQL: LISTEN/NOTIFY).
        """

    async def renew(self, receipts: list[str], lease: float) -> list[str]:
        """Extend the leases of these claims, in one write.

        Returns the ids of those to stop: the lease was lost (claimed again
        elsewhere, or finished), or the task was cancelled while running.
        """
        ...

    async def finish(self, settlements: list[Settlement]) -> list[bool]:
        """Settle attempts in one write: succeeded (with the result), scheduled again at
        `retry_at`, or failed (the dead letter, with error and traceback).

        False for each claim that is no longer current (its lease was lost, or
        the task was cancelled): that outcome is ignored, the recorded state is
        whatever the current owner wrote.
        """
        ...

    async def progress(self, receipt: str, document: str) -> bool:
        """Keep the latest progress report (JSON) of the claim's attempt (also if it has just
        finished: its last report may come after its outcome); False if another attempt
        is the latest."""
        ...

    async def release(self, receipts: list[str]) -> None:
        """Give claimed tasks back unfinished (shutdown): pending again, attempt not counted."""

    async def cancel(self, ids: list[str], reason: str) -> int:
        """Cancel unfinished tasks: waiting ones at once; running ones are marked, and
        the next `renew` of their claim reports them. Returns how many were cancelled."""
        ...

    async def get(self, task_id: str) -> StoredStatus | None:
        """One task by id (None: unknown, or purged)."""
        ...

    async def counts(self, queue: str | None = None) -> dict[str, int]:
        """How many tasks per state as `TaskInfo` shows it (held counts as pending, a
        pending task not yet due as scheduled), every state present; of one queue."""
        ...

    async def queues(self) -> list[str]:
        """The names of the queues the store has tasks of (sorted); a queue whose tasks were
        all purged may still be named."""
        ...

    async def list_tasks(
        self,
        *,
        state: str | None = None,
        queue: str | None = None,
        name: str | None = None,
        limit: int = 50,
        before: str | None = None,
    ) -> list[StoredStatus]:
        """Tasks, newest first, optionally of one state (as `TaskInfo` shows it: a
        ``scheduled`` task is pending with a later due time), queue or name; ``before``
        is the last id of the previous page."""
        ...

    async def search(
        self, where: TaskFilter, *, limit: int = 50, before: str | None = None, scan: int = 10_000
    ) -> TaskPage:
        """Tasks matching `where`, newest first (by id), older than the id `before`.

        Bounded whatever the store's size: it looks at no more than `scan` tasks (an index
        that yields only candidates, such as one of a state, counts only what it yields),
        and returns up to `limit` matches. `TaskPage.cursor` continues the search: the last
        match when the page is full, the last task looked at when `scan` ran out first,
        None when no older task can match (ids sort by creation time, so `created_after`
        ends the search and `created_before` starts it)."""
        ...

    async def failure_groups(self, *, scan: int = 10_000) -> list[FailureGroup]:
        """The failed tasks grouped by name and exception type, largest group first:
        of the `scan` most recently created failed tasks."""
        ...

    async def oldest_due(self, queue: str | None = None) -> float | None:
        """The earliest `due_at` of the tasks pending and due now (of one queue): how long
        the longest-waiting runnable task has waited. None: nothing is waiting."""
        ...

    async def run_now(self, ids: list[str]) -> int:
        """Waiting tasks (pending or scheduled: not held, not running) become due now, as
        if their delay or retry wait were over; wakes waiting workers. Returns how many."""
        ...

    async def delete(self, ids: list[str]) -> int:
        """Delete finished tasks (succeeded, failed, cancelled), as `purge` does; the
        others are left alone. Returns how many were deleted."""
        ...

    async def pause_queue(self, queue: str, paused: bool) -> None:
        """Pause a queue (no task of it is claimed or started until resumed; running
        ones go on) or resume it (wakes waiting workers)."""

    async def paused_queues(self) -> list[str]:
        """The paused queues, sorted."""
        ...

    async def gate_usage(self) -> list[GateUsage]:
        """Every rate limit and per-key concurrency limit with tasks in use or waiting:
        starts in its current window or tasks running, and tasks waiting in its line."""
        ...

    async def retry(self, ids: list[str] | None) -> int:
        """Failed tasks (these ids, or all with None) back to pending; returns how many."""
        ...

    async def purge(
        self, finished_before: float, states: tuple[str, ...], *, dry_run: bool = False
    ) -> int:
        """Delete tasks in these finished states that finished before then; returns how
        many (``dry_run``: only counts them)."""
        ...

    async def warm_up(self, queues: tuple[str, ...] | None) -> None:
        """Get ready for a worker's first claims and outcomes (of these queues, or all), so
        that the first tasks start as soon as the next (connections opened, statements
        prepared); nothing by default. Best effort: the worker goes on if it fails."""

    async def heartbeat(self, worker: WorkerInfo, expires_in: float) -> None:
        """Record that this worker is alive (its `seen_at` is now) until `expires_in`
        seconds from now; 0 removes it (a worker that stops says so)."""

    async def workers(self, *, include_expired: bool = False) -> list[WorkerInfo]:
        """The workers whose last heartbeat has not expired, by name, each with its
        `expires_at`; with ``include_expired``, also those whose heartbeats stopped and
        that nobody has taken over yet (`take_over` removes them)."""
        ...

    async def take_over(self, worker: str) -> list[str]:
        """A worker is dead: end its claims now and forget its heartbeat.

        Its running tasks' leases expire at once, so the next claim takes them over as
        lost (counted in `lost`, as if the lease had run out); an outcome the dead
        worker would still send is refused (fencing). Returns the ids of those tasks;
        none when another process took them over first. Wakes this process's waiting
        workers, as a write does."""
        ...

    async def schedules(self) -> list[ScheduleRecord]:
        """Every schedule the store knows, by name."""
        ...

    async def declare_schedules(self, schedules: list[tuple[str, str]]) -> None:
        """Record these (name, rule) schedules, those the store does not know yet (a rule
        that changed is recorded by the next `fire_schedule`)."""

    async def fire_schedule(
        self,
        name: str,
        rule: str,
        tick: int,
        task: NewTask | None,
        note: str = "",
        *,
        skip_if_running: bool = False,
    ) -> ScheduleRecord | None:
        """Handle one tick of a schedule, once whatever the number of processes trying.

        In one atomic step: nothing (None) if the schedule's latest tick handled is
        `tick` or later (another process did it). Else `tick` becomes the latest, under
        `rule`, and: if the schedule is paused, nothing is enqueued (noted "paused");
        else with no `task`, the tick is skipped (noted `note`); else with
        `skip_if_running` and the previous tick's task still held, pending or running,
        skipped too; else `task` is enqueued (as `enqueue` would, key included) and
        becomes the last task. Returns the record as it now is."""
        ...

    async def pause_schedule(self, name: str, paused: bool) -> bool:
        """Pause a schedule (its ticks are noted, nothing enqueued) or resume it (from its
        next tick on); False if there is no schedule of that name."""
        ...

    async def attempts(self, task_id: str) -> list[AttemptRecord]:
        """The attempts of a task that did not succeed, oldest first: at most the latest
        `ATTEMPTS_KEPT`; [] for an unknown task. Written in the write that ends the attempt
        (`finish` of a retry, a dead letter or a cancel; the `claim` that takes a lost task
        over, puts it back in its line or dead-letters it, `take_over`'s included), never
        on the success path; deleted with the task (`purge`, `delete`)."""
        ...


@runtime_checkable
class TransactionalStore(Protocol):
    """A store that lives in the app's own database, so that it can write tasks in the
    app's transaction (PostgreSQL's): they are stored with what the transaction commits,
    and never exist if it rolls back. The other stores are not one."""

    async def enqueue_on(self, connection: object, tasks: list[NewTask]) -> list[str]:
        """`Store.enqueue` on the app's async connection, in its open transaction, never
        beginning, committing or rolling it back; TypeError for a connection it cannot use,
        ValueError for one whose statements would not be part of a transaction."""
        ...

    def enqueue_on_blocking(self, connection: object, tasks: list[NewTask]) -> list[str]:
        """`enqueue_on` for a blocking connection of the app's."""
        ...
