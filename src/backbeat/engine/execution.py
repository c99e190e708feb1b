"""One attempt of one task, written once for both feeders.

The in-process feeder (`engine.local`) and the stored feeder (`engine.stored`)
hand an attempt here with a way to record its outcome, and get the outcome
back. Everything that makes an attempt an attempt happens here and only here:

* the hooks, each with a `TaskInfo` built the same way whatever feeds it
  (``error`` set from the first failure on, ``started_at`` the start of this
  attempt, ``finished_at`` once the task is finished);
* the timeout (``TimeoutError: timed out after 30s``);
* cancellation: a cancel from outside (the drain, `Runner.cancel`) propagates;
  a task that raises ``CancelledError`` by itself has failed
  (``CancelledError: cancelled by the task``);
* the retry decision (`backbeat.policy.retry_wait`), the log lines, and the
  listeners told of a final failure;
* the observers (`backbeat.observers`: tracing, metrics), around the attempt.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from backbeat.logs import about_task, log_failure
from backbeat.observers import Observer, end_all, watch_all
from backbeat.policy import TaskPolicy, retry_wait
from backbeat.progress import Reporter, current_reporter
from backbeat.status import (
    CANCELLED,
    FAILED,
    RUNNING,
    SCHEDULED,
    SUCCEEDED,
    TaskInfo,
    TaskState,
)

logger = logging.getLogger("backbeat")

Hook = Callable[..., Any]
FailureListener = Callable[[TaskInfo, BaseException], None]


@dataclass(slots=True)
class Hooks:
    """The runner's hooks, handed to the feeders as a value."""

    on_start: Hook | None = None
    on_success: Hook | None = None
    on_error: Hook | None = None
    on_retry: Hook | None = None
    # Told of every task that failed for good (`backbeat.testing.TestClient` listens).
    failure_listeners: list[FailureListener] = field(default_factory=list)
    observers: list[Observer] = field(default_factory=list)

    def add_observer(self, observer: Observer) -> None:
        if not isinstance(observer, Observer):
            raise TypeError(f"add_observer expects a backbeat.observers.Observer, got {observer!r}")
        self.observers.append(observer)

    def remove_failure_listener(self, listener: FailureListener) -> None:
        if listener in self.failure_listeners:
            self.failure_listeners.remove(listener)


class AttemptLike(Protocol):
    """What the executor reads of the attempt it runs (a feeder may pass its own object)."""

    @property
    def id(self) -> str: ...
    @property
    def name(self) -> str: ...
    @property
    def number(self) -> int: ...
    @property
    def created(self) -> float: ...
    @property
    def policy(self) -> TaskPolicy: ...
    @property
    def lost(self) -> int: ...
    @property
    def carried(self) -> Mapping[str, str] | None: ...
    @property
    def queue(self) -> str: ...

    error: str | None  # the last failure's text; the executor sets it


@dataclass(slots=True)
class Attempt:
    """What the executor needs to know about the attempt it runs."""

    id: str
    name: str
    number: int  # 1 for the first attempt
    created: float
    policy: TaskPolicy
    # Attempts whose worker died under them: they do not count as failures of the task.
    lost: int = 0
    error: str | None = None  # the last failure's text, if an earlier attempt failed
    queue: str = "default"
    carried: Mapping[str, str] | None = None  # what the observers kept with the task


@dataclass(slots=True)
class Outcome:
    """How an attempt ended, as the state the task moves to: SUCCEEDED (with the
    return value), SCHEDULED (to be retried in `retry_in` seconds) or FAILED for good."""

    state: TaskState
    result: Any = None
    error: str | None = None
    traceback: str | None = None
    retry_in: float | None = None  # seconds, when SCHEDULED
    failure: BaseException | None = None  # what the attempt raised (not stored)


def _utc(timestamp: float | None) -> datetime | None:
    return None if timestamp is None else datetime.fromtimestamp(timestamp, UTC)


def task_info(
    attempt: AttemptLike,
    state: TaskState,
    started: float,
    error: str | None,
    finished: float | None = None,
) -> TaskInfo:
    created_at = _utc(attempt.created)
    assert created_at is not None
    return TaskInfo(
        id=attempt.id,
        name=attempt.name,
        state=state,
        attempts=attempt.number,
        error=error,
        created_at=created_at,
        started_at=_utc(started),
        finished_at=_utc(finished),
        queue=attempt.queue,
    )


async def call_hook(hook: Hook, *args: Any) -> None:
    """Call a hook (sync or async); a hook that raises is logged and changes nothing."""
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        logger.exception("backbeat runner hook %r failed", hook)


Record = Callable[[Any, Outcome], Awaitable[None] | None]


async def run_attempt(
    attempt: AttemptLike,
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    hooks: Hooks,
    record: Record,
    *,
    wait_for_retry: bool = True,
    reporter: Reporter | None = None,
) -> Outcome:
    """Run one attempt of ``func(*args, **kwargs)``, record its outcome with
    ``record(attempt, outcome)``, then tell the hooks.

    ``wait_for_retry=False`` (eager mode) decides a retry with no wait;
    ``reporter`` receives the attempt's `backbeat.progress(...)` reports.
    """
    started = time.time()
    if reporter is not None:
        current_reporter.set(reporter)  # this task's own context: it ends with the attempt
    if hooks.on_start is not None:
        await call_hook(hooks.on_start, task_info(attempt, RUNNING, started, attempt.error))
    if not hooks.observers:
        return await _run(attempt, func, args, kwargs, hooks, record, wait_for_retry, started)
    info = task_info(attempt, RUNNING, started, attempt.error)
    watches = watch_all(hooks.observers, info, attempt.carried)
    try:
        outcome = await _run(attempt, func, args, kwargs, hooks, record, wait_for_retry, started)
    except asyncio.CancelledError as exc:
        end_all(watches, CANCELLED, exc, time.time() - started)
        raise
    end_all(watches, outcome.state, outcome.failure, time.time() - started)
    return outcome


async def _run(
    attempt: AttemptLike,
    func: Callable[..., Awaitable[Any]],
    args: tuple[Any, ...] | list[Any],
    kwargs: dict[str, Any],
    hooks: Hooks,
    record: Record,
    wait_for_retry: bool,
    started: float,
) -> Outcome:
    timeout = attempt.policy.timeout
    failure: BaseException
    try:
        if timeout is None:
            result = await func(*args, **kwargs)
        else:
            try:
                async with asyncio.timeout(timeout) as deadline:
                    result = await func(*args, **kwargs)
            except TimeoutError as exc:
                if not deadline.expired():
                    raise
                raise TimeoutError(f"timed out after {timeout:g}s") from exc
    except asyncio.CancelledError as exc:
        current = asyncio.current_task()
        if current is not None and current.cancelling():
            raise  # cancelled from outside (the drain, a cancel): the feeder records it
        failure = asyncio.CancelledError("cancelled by the task")
        failure.__cause__ = exc
    except Exception as exc:
        failure = exc
    else:
        outcome = Outcome(SUCCEEDED, result)
        recorded = record(attempt, outcome)
        if recorded is not None:
            await recorded
        if hooks.on_success is not None:
            info = task_info(attempt, SUCCEEDED, started, attempt.error, time.time())
            await call_hook(hooks.on_success, info)
        return outcome
    return await _failed(attempt, failure, started, hooks, record, wait_for_retry)


async def _failed(
    attempt: AttemptLike,
    failure: BaseException,
    started: float,
    hooks: Hooks,
    record: Record,
    wait_for_retry: bool,
) -> Outcome:
    error = f"{type(failure).__name__}: {failure}"
    attempt.error = error
    if hooks.on_error is not None:
        await call_hook(hooks.on_error, task_info(attempt, RUNNING, started, error), failure)
    trace = "".join(traceback.format_exception(failure))
    wait = retry_wait(attempt.policy, attempt.number - attempt.lost)
    if wait is not None:
        wait = wait if wait_for_retry else 0.0
        logger.warning(
            "Background task %r (id %s) attempt %d of %d failed (%s); retrying in %.2fs",
            attempt.name,
            attempt.id,
            attempt.number,
            attempt.policy.retries + attempt.lost + 1,
            error,
            wait,
            extra=about_task(attempt.id, attempt.name, attempt.number, attempt.queue),
        )
        outcome = Outcome(SCHEDULED, error=error, traceback=trace, retry_in=wait, failure=failure)
        recorded = record(attempt, outcome)
        if recorded is not None:
            await recorded
        if hooks.on_retry is not None:
            await call_hook(hooks.on_retry, task_info(attempt, SCHEDULED, started, error), failure)
        return outcome
    log_failure(attempt.id, attempt.name, failure, attempt.number, attempt.queue)
    outcome = Outcome(FAILED, error=error, traceback=trace, failure=failure)
    recorded = record(attempt, outcome)
    if recorded is not None:
        await recorded
    report_failure(hooks, task_info(attempt, FAILED, started, error, time.time()), failure)
    return outcome


def report_failure(hooks: Hooks, info: TaskInfo, exc: BaseException) -> None:
    for listener in hooks.failure_listeners:
        listener(info, exc)
