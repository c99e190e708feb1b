"""`Engine`: what a `Runner` asks of its feeder, whichever it holds.

Two feeders implement it: `engine.local.LocalEngine` (live objects, no store) and
`engine.stored.StoredEngine` (tasks kept in a store). The Runner holds one and delegates
every verb to it without asking which: where a verb only means something with a store
(writing ahead of a response, leaving execution to workers, the worker's health), the
local engine's docstring says what it does instead — nothing where nothing is owed, an
error naming the missing store where the caller expects an effect.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

from backbeat.engine.health import WorkerHealth
from backbeat.registry import TaskRegistry
from backbeat.schedules import Schedule
from backbeat.status import TaskInfo
from backbeat.stores.base import Store, StoredStatus
from backbeat.tasks import BackgroundTask, RequestTasks

if TYPE_CHECKING:
    from backbeat.engine.stored import Prepared

# A hook that calls a function back once, when the app's transaction commits (Django's
# ``transaction.on_commit``), and never if it rolls back.
OnCommit = Callable[[Callable[[], None]], object]


class Engine(Protocol):
    """A feeder: takes tasks, runs them (or leaves them to workers), answers for their status."""

    # The runner's periodic tasks (its own list, so that one added later is seen).
    schedules: list[Schedule]
    # Whether this process runs the tasks (False: it only writes them, workers run them).
    execute: bool
    # The queues this process runs tasks from (None: all).
    queues: tuple[str, ...] | None

    @property
    def durable(self) -> bool:
        """True when tasks are kept in a store."""

    @property
    def store(self) -> Store | None: ...

    @property
    def registry(self) -> TaskRegistry | None:
        """The names stored tasks are run by (None: tasks are live objects, no names)."""

    @property
    def accepting(self) -> bool:
        """True between `start()` and the end of `drain()`'s accepting phase."""

    @property
    def status_poll(self) -> float:
        """Seconds between two looks at a task's status while waiting for its result."""

    # --- lifecycle ---------------------------------------------------------------------

    async def start(self) -> None: ...

    async def wait_connected(self, timeout: float | None) -> bool:  # noqa: ASYNC109
        """Whether the store has answered, waiting `timeout` seconds for it."""

    async def drain(self) -> None: ...

    def gather_schedules(self, declared: list[Schedule]) -> None:
        """At start: add the @task(cron=...) schedules to `schedules` (checked), or refuse."""

    def check_schedule(self, schedule: Schedule) -> None:
        """TypeError or ValueError now for a schedule whose ticks could not be enqueued."""

    def schedule_added(self) -> None:
        """A schedule joined `schedules`: let the one running them see it."""

    # --- names and writing ahead of a response -----------------------------------------

    def register(self, func: Callable[..., Any]) -> str: ...

    def register_module(self, module: str) -> None: ...

    def register_tree(self, task: BackgroundTask) -> None: ...

    async def prepare(self, task: BackgroundTask) -> Prepared: ...

    async def prepare_collected(self, collector: RequestTasks) -> None: ...

    async def abandon_collected(self, collector: RequestTasks, reason: str) -> None: ...

    # --- taking tasks ------------------------------------------------------------------

    def as_stored(self, task: BackgroundTask) -> BackgroundTask:
        """The task with its arguments as a worker would get them from a store (a runner
        that round-trips); with a store, the task itself: its write is the round trip."""

    def submit(self, task: BackgroundTask, connection: object = None) -> str:
        """Take a task; with `connection` (a blocking one of the app's), written in its
        transaction (`backbeat.stores.base.TransactionalStore`)."""

    async def asubmit(self, task: BackgroundTask, connection: object = None) -> str:
        """`submit` for async code; `connection`: an async one of the app's."""

    def submit_on_commit(self, task: BackgroundTask, on_commit: OnCommit) -> str:
        """Take a task when the app's transaction commits: checked and given its id now,
        written when `on_commit` calls back (`Runner.submit_on_commit`)."""

    def take(self, task: BackgroundTask) -> bool: ...

    async def hand_off(self, task: BackgroundTask) -> None: ...

    # --- looking and cancelling ----------------------------------------------------------

    def get(self, task_id: str) -> TaskInfo | None: ...

    async def aget(self, task_id: str) -> TaskInfo | None: ...

    def stored(self, task_id: str) -> StoredStatus | None:
        """A task as its store keeps it."""

    def tasks(self) -> list[TaskInfo]:
        """The tasks this process keeps in memory, oldest first."""

    def stats(self) -> dict[str, int]: ...

    async def queue_stats(self) -> dict[str, dict[str, int]]: ...

    def health(self) -> WorkerHealth | None:
        """Whether this process's worker beats; None where it runs no stored tasks."""

    async def join(self, timeout: float | None) -> None: ...  # noqa: ASYNC109

    def cancel(self, task_id: str, reason: str) -> bool: ...

    async def acancel(self, task_id: str, reason: str) -> bool: ...
