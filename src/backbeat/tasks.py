"""BackgroundTask, BackgroundTasks and the `@task` decorator.

The seed API of Esmerald (and Lilya, as `Task`/`Tasks`), kept exactly, with
backbeat's rules on top:

* Isolation: a task that raises is logged on the ``backbeat`` logger and never
  stops, skips or cancels its siblings; nothing it raises escapes ``await t()``.
  Cancellation is never swallowed.
* Context: a task sees the contextvars as they were when it was created.
* Every task has an ``id``: a ULID, unique and sorted by creation time.
"""

from __future__ import annotations

import asyncio
import contextvars
import copy
import functools
import time
from collections.abc import Awaitable, Callable, Iterable
from datetime import timedelta
from typing import Any, ParamSpec, Protocol, Self, TypeVar, overload

import anyio
from starlette.background import BackgroundTask as StarletteBackgroundTask

from backbeat.concurrency import enforce_async_callable, synchronous
from backbeat.gates import check_concurrency_key
from backbeat.ids import new_id
from backbeat.logs import log_failure
from backbeat.policy import DEFAULT_POLICY, TaskPolicy
from backbeat.schedules import MissedTicks, Schedule, make_rule, make_schedule

P = ParamSpec("P")
F = TypeVar("F", bound=Callable[..., Any])

_POLICY_ATTRIBUTE = "__backbeat_task__"


@overload
def task(func: F, /) -> F: ...
@overload
def task(
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    timeout: float | None = None,
    delay: float | None = None,
    queue: str = "default",
    priority: int = 0,
    rate_limit: str | None = None,
    rate_limit_key: Callable[..., str] | None = None,
    concurrency_key: str | Callable[..., str] | None = None,
    max_concurrency: int | None = None,
    cron: str | None = None,
    every: timedelta | float | None = None,
    tz: str | None = None,
    missed: MissedTicks = "latest",
    catch_up: int = 10,
    max_lateness: timedelta | float | None = None,
    skip_if_running: bool = False,
) -> Callable[[F], F]: ...
def task(
    func: F | None = None,
    /,
    *,
    name: str | None = None,
    retries: int = 0,
    backoff: float = 1.0,
    max_backoff: float = 60.0,
    timeout: float | None = None,
    delay: float | None = None,
    queue: str = "default",
    priority: int = 0,
    rate_limit: str | None = None,
    rate_limit_key: Callable[..., str] | None = None,
    concurrency_key: str | Callable[..., str] | None = None,
    max_concurrency: int | None = None,
    cron: str | None = None,
    every: timedelta | float | None = None,
    tz: str | None = None,
    missed: MissedTicks = "latest",
    catch_up: int = 10,
    max_lateness: timedelta | float | None = None,
    skip_if_running: bool = False,
) -> F | Callable[[F], F]:
    """Declare a task function's policy where the function is defined.

    The function itself is returned, unchanged and directly callable; any
    `BackgroundTask` made from it picks the policy up::

        @task(name="emails.send", retries=3, timeout=30)
        async def send_email(message: str) -> None: ...

    ``retries`` extra attempts after a failure, waiting ``backoff * 2**(n-1)``
    seconds (jittered, capped at ``max_backoff``); ``timeout`` seconds per
    attempt; ``delay`` seconds after creation before the first attempt. The
    supervised runner applies them; inline (no runner) a task runs once. With a
    store, ``queue`` names the workers that take it (``backbeat worker --queues``)
    and higher ``priority`` tasks are claimed first.

    ``cron="*/5 * * * *"`` (in time zone ``tz``, default UTC) or ``every=timedelta(...)``
    also makes it a periodic task, called with no arguments at every tick by any runner
    with a store that imports it, once per tick whatever the number of processes
    (`backbeat.schedules`, docs/scheduling.md); ``missed``, ``catch_up``,
    ``max_lateness`` and ``skip_if_running`` as for `Runner.schedule`.

    Limits, enforced by the store across every worker (docs/scheduling.md):
    ``rate_limit="20/s"`` (or ``"100/m"``, ``"1000/h"``, ``"20/2s"``) caps how many start
    per window, per ``rate_limit_key(*args, **kwargs)`` value if given;
    ``concurrency_key`` (a parameter's name, or a callable returning a str) with
    ``max_concurrency`` (default 1) caps how many with the same key value run at once
    (``max_concurrency`` alone: how many of this task run at once).
    """
    options = {
        "retries": retries,
        "backoff": backoff,
        "max_backoff": max_backoff,
        "timeout": timeout,
        "delay": delay,
        "queue": queue,
        "priority": priority,
        "rate_limit": rate_limit,
        "rate_limit_key": rate_limit_key,
        "concurrency_key": concurrency_key,
        "max_concurrency": max_concurrency,
    }
    # Validate now, so a bad option fails at import time, not at the first request.
    TaskPolicy(**options)  # type: ignore[arg-type]
    periodic = cron is not None or every is not None
    if periodic:
        make_rule(cron, every, tz)
    elif tz is not None or skip_if_running or max_lateness is not None or missed != "latest":
        raise ValueError("tz, missed, max_lateness and skip_if_running need cron= or every=")
    elif catch_up != 10:
        raise ValueError("catch_up needs cron= or every=")

    def decorate(fn: F) -> F:
        if not callable(fn):
            raise TypeError(f"@task needs a function, got {fn!r}")
        check_concurrency_key(fn, concurrency_key)
        policy = TaskPolicy(name=name, **options)  # type: ignore[arg-type]
        schedule = None
        if periodic:  # checked before the function is marked: a bad one is not declared
            schedule = make_schedule(
                fn,
                name=name or qualified_name(fn),
                cron=cron,
                every=every,
                tz=tz,
                missed=missed,
                catch_up=catch_up,
                max_lateness=max_lateness,
                skip_if_running=skip_if_running,
            )
        try:
            setattr(fn, _POLICY_ATTRIBUTE, policy)
        except AttributeError:
            raise TypeError(
                f"@task cannot mark {fn!r}: it takes no attributes; wrap it in a def"
            ) from None
        _declared.append(fn)
        if schedule is not None:
            _declared_schedules.append(schedule)
        return fn

    return decorate(func) if func is not None else decorate


# Every @task function, so that a durable runner can register them by name (a
# worker that imports the app's modules knows all the tasks they declare).
_declared: list[Callable[..., Any]] = []


def declared_tasks() -> list[Callable[..., Any]]:
    return list(_declared)


# Every periodic @task (cron= or every=): every runner with a store that imports them runs them.
_declared_schedules: list[Schedule] = []


def declared_schedules() -> list[Schedule]:
    return list(_declared_schedules)


def task_policy(func: Callable[..., Any]) -> TaskPolicy | None:
    """The policy `@task` attached to a function, if any."""
    policy = getattr(func, _POLICY_ATTRIBUTE, None)
    return policy if isinstance(policy, TaskPolicy) else None


def qualified_name(func: object) -> str:
    """`module:qualname` of a function, of a partial's function, or of a callable's class."""
    while isinstance(func, functools.partial):
        func = func.func
    qualname = getattr(func, "__qualname__", None)
    target = func if isinstance(qualname, str) else type(func)
    module = getattr(target, "__module__", None) or "?"
    return f"{module}:{getattr(target, '__qualname__', '?')}"


class TaskSink(Protocol):
    """Where `await task()` hands a task to instead of running it (a `Runner`)."""

    def take(self, task: BackgroundTask) -> bool:
        """Take the task now if possible (the usual case, no await); False if not."""
        ...

    async def hand_off(self, task: BackgroundTask) -> None:
        """Take the task, waiting for room or running it inline as the sink decides."""
        ...

    @property
    def durable(self) -> bool:
        """True when tasks must be written (`prepare`) before the response starts."""
        ...

    async def prepare(self, task: BackgroundTask) -> PreparedTasks:
        """Store the tasks ahead of the response; activate what it returns once it is sent."""
        ...


class PreparedTasks(Protocol):
    """Tasks stored ahead of a response: runnable once activated, cancelled if abandoned."""

    async def activate(self) -> None: ...

    async def abandon(self, reason: str) -> None: ...


# Set for the duration of a request by `App` and `BackbeatMiddleware`; unset
# (None) everywhere else, including inside the runner's own task executions.
current_runner: contextvars.ContextVar[TaskSink | None] = contextvars.ContextVar(
    "backbeat_current_runner", default=None
)


class RequestTasks:
    """The backbeat tasks made while one request is served (under a durable runner).

    `BackbeatMiddleware` collects them so that they can be stored before the
    response starts, although it cannot see which ones the response holds:
    those the response runs are activated, the others cancelled at the end.
    """

    __slots__ = ("created", "prepared", "refused")

    def __init__(self) -> None:
        self.created: list[BackgroundTask] = []
        # id(task) -> what awaiting it does now: make its stored rows runnable.
        self.prepared: dict[int, PreparedTasks] = {}
        # Storing failed and the client got an error: these tasks must not run.
        self.refused = False


request_tasks: contextvars.ContextVar[RequestTasks | None] = contextvars.ContextVar(
    "backbeat_request_tasks", default=None
)


class _Unset:
    pass


_UNSET = _Unset()


class BackgroundTask(StarletteBackgroundTask):
    """One function call to run after the response: ``BackgroundTask(func, *args, **kwargs)``.

    ``await task()`` runs it; an exception is logged and never escapes. It
    subclasses Starlette's class only so that type checkers accept it wherever
    a Starlette/FastAPI response takes ``background=``.
    """

    func: Callable[..., Awaitable[Any]]
    is_async = True

    def __init__(self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> None:
        # Starlette's __init__ is not called: it would inspect `func` a second time.
        self.func = enforce_async_callable(func)
        self.args = args  # type: ignore[assignment]
        self.kwargs = kwargs  # type: ignore[assignment]
        self.id = new_id()
        self.created = time.time()
        self.policy = task_policy(func) or DEFAULT_POLICY
        self.name = self.policy.name or qualified_name(func)
        # The task runs in a copy of the context it was made in; None means "in
        # the caller's context" (used for a route's `background=`, made once at
        # import time but run for every request).
        self.context: contextvars.Context | None = contextvars.copy_context()
        if (collector := request_tasks.get()) is not None:
            collector.created.append(self)

    async def __call__(self) -> None:
        runner = current_runner.get()
        if runner is not None:
            if not runner.take(self):
                await runner.hand_off(self)
            return
        try:
            await self.run()
        except Exception as exc:
            log_failure(self.id, self.name, exc, queue=self.policy.queue)

    def using(
        self,
        *,
        retries: int | None = None,
        backoff: float | None = None,
        max_backoff: float | None = None,
        timeout: float | _Unset | None = _UNSET,
        delay: float | _Unset | None = _UNSET,
        queue: str | None = None,
        priority: int | None = None,
        key: str | _Unset | None = _UNSET,
        rate_limit: str | _Unset | None = _UNSET,
        rate_limit_key: Callable[..., str] | _Unset | None = _UNSET,
        concurrency_key: str | Callable[..., str] | _Unset | None = _UNSET,
        max_concurrency: int | _Unset | None = _UNSET,
    ) -> Self:
        """Override this task's policy (from `@task` or the defaults); returns the task.

        ``key`` is an idempotency key: while a task with the same key is waiting or
        running, handing this one over adds nothing and gives that task's id.
        ``rate_limit``, ``rate_limit_key``, ``concurrency_key`` and ``max_concurrency``
        are the gates of `task` (None removes one).
        """
        changes: dict[str, Any] = {
            name: value
            for name, value in (
                ("retries", retries),
                ("backoff", backoff),
                ("max_backoff", max_backoff),
                ("queue", queue),
                ("priority", priority),
            )
            if value is not None
        }
        optional = (
            ("timeout", timeout),
            ("delay", delay),
            ("key", key),
            ("rate_limit", rate_limit),
            ("rate_limit_key", rate_limit_key),
            ("concurrency_key", concurrency_key),
            ("max_concurrency", max_concurrency),
        )
        for key_name, option in optional:
            if not isinstance(option, _Unset):
                changes[key_name] = option
        if changes.get("rate_limit", "") is None and "rate_limit_key" not in changes:
            changes["rate_limit_key"] = None  # no rate limit: no key for it either
        if "concurrency_key" in changes:
            check_concurrency_key(synchronous(self.func) or self.func, changes["concurrency_key"])
        self.policy = self.policy.replace(**changes)
        return self

    async def run(self) -> None:
        """Run the task once and let its exception propagate (the runner's primitive)."""
        if self.context is None:
            await self.func(*self.args, **self.kwargs)
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # pragma: no cover - another anyio backend (trio)
            await self.func(*self.args, **self.kwargs)
            return
        # A separate asyncio task is the only way to run a coroutine in a given
        # context. Awaiting it forwards our cancellation to it. A fresh copy per
        # run keeps runs from seeing each other's changes.
        await loop.create_task(self._invoke(), context=self.context.copy())

    async def _invoke(self) -> None:
        await self.func(*self.args, **self.kwargs)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} id={self.id}>"

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        # Frameworks deep-copy route handlers (a Litestar Router does), and a contextvars
        # Context cannot be copied that way. It is a snapshot each run copies anyway, so
        # the copy shares it; the rest is copied.
        copied = object.__new__(type(self))
        memo[id(self)] = copied
        for name in _attribute_names(self):
            value = getattr(self, name)
            shared = name == "context"
            setattr(copied, name, value if shared else copy.deepcopy(value, memo))
        return copied


def _attribute_names(task: BackgroundTask) -> list[str]:
    """The attributes a task has set, in its __dict__ and in slots (a framework's task class
    mixed in may keep some there: Litestar's `BackgroundTasks` keeps `tasks` in one)."""
    names = list(vars(task))
    for klass in type(task).__mro__:
        slots = getattr(klass, "__slots__", ())
        for slot in (slots,) if isinstance(slots, str) else slots:
            if slot not in ("__dict__", "__weakref__") and hasattr(task, slot):
                names.append(slot)
    return names


class BackgroundTasks(BackgroundTask):
    """An ordered collection of tasks: ``BackgroundTasks(tasks=None, as_group=False)``.

    Run one after another (``run_single``) or concurrently (``run_as_group``,
    when ``as_group`` is true). Either way a failing task affects no other.
    """

    def __init__(
        self, tasks: Iterable[BackgroundTask] | None = None, as_group: bool = False
    ) -> None:
        self.tasks: list[BackgroundTask] = _task_list(tasks)
        self.as_group = as_group
        StarletteBackgroundTask.__init__(self, self._run_tasks)
        self.id = new_id()
        self.created = time.time()
        self.policy = DEFAULT_POLICY
        self.name = type(self).__name__
        # Each member carries its own context; the collection needs none.
        self.context = None
        if (collector := request_tasks.get()) is not None:
            collector.created.append(self)

    def add_task(self, func: Callable[P, Any], *args: P.args, **kwargs: P.kwargs) -> BackgroundTask:
        new_task = BackgroundTask(func, *args, **kwargs)
        self.tasks.append(new_task)
        return new_task

    def __deepcopy__(self, memo: dict[int, Any]) -> Self:
        copied = super().__deepcopy__(memo)
        copied.func = copied._run_tasks  # not the original's
        return copied

    async def _run_tasks(self) -> None:
        if self.as_group:
            await self.run_as_group()
        else:
            await self.run_single()

    async def run_single(self) -> None:
        if (runner := current_runner.get()) is not None:
            await runner.hand_off(BackgroundTasks(self.tasks))
            return
        for member in self.tasks:
            await _run_isolated(member)

    async def run_as_group(self) -> None:
        if (runner := current_runner.get()) is not None:
            await runner.hand_off(BackgroundTasks(self.tasks, as_group=True))
            return
        async with anyio.create_task_group() as group:
            for member in self.tasks:
                group.start_soon(_run_isolated, member)

    def __repr__(self) -> str:
        mode = "group" if self.as_group else "sequence"
        return f"<{type(self).__name__} {mode} of {len(self.tasks)} id={self.id}>"


async def _run_isolated(member: BackgroundTask) -> None:
    # Members are normally BackgroundTasks that isolate themselves; this also
    # covers anything appended to `.tasks` by hand.
    try:
        await member()
    except Exception as exc:
        name = getattr(member, "name", None) or qualified_name(member)
        queue = getattr(getattr(member, "policy", None), "queue", None)
        log_failure(getattr(member, "id", None), name, exc, queue=queue)


def _task_list(tasks: Iterable[BackgroundTask] | None) -> list[BackgroundTask]:
    if tasks is None:
        return []
    if isinstance(tasks, BackgroundTask) or not isinstance(tasks, Iterable):
        raise TypeError(
            f"BackgroundTasks(tasks=...) expects a list of BackgroundTask, got {tasks!r}"
            + ("; wrap a single task in a list" if isinstance(tasks, BackgroundTask) else "")
        )
    result = list(tasks)
    for index, item in enumerate(result):
        if not isinstance(item, BackgroundTask):
            raise TypeError(
                f"BackgroundTasks(tasks=...) expects BackgroundTask items, "
                f"got {item!r} ({type(item).__name__}) at index {index}"
            )
    return result


# Lilya's names for the same classes.
Task = BackgroundTask
Tasks = BackgroundTasks
