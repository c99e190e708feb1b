"""A claimed task in, an attempt out; an outcome in, a settlement out.

What the worker does with a stored task before and after running it, as plain
functions: find its function by name and decode its arguments (or say why it
cannot run here), build the attempt with the task's stored policy, and turn
the attempt's outcome into the `Settlement` the store records.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
from collections.abc import Callable
from typing import Any, NamedTuple

from backbeat.engine.execution import Attempt, Outcome
from backbeat.logs import about_task
from backbeat.policy import TaskPolicy
from backbeat.registry import TaskRegistry
from backbeat.serialization import ArgumentError, carried_in, decode_arguments, encode_result
from backbeat.signing import verified
from backbeat.status import SUCCEEDED
from backbeat.stores.base import ClaimedTask, Settlement

logger = logging.getLogger("backbeat")


class Unrunnable(Exception):
    """The stored task cannot run in this process: dead-letter it, keep going."""


Call = tuple[Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class WrittenHere(NamedTuple):
    """A task this process wrote, kept until it claims it: the request's context it runs
    in, and the call as read back from its stored arguments when it was written (the
    same call `resolve` would decode again), or None when that was too large to keep."""

    context: contextvars.Context
    call: Call | None


@functools.lru_cache(maxsize=256)
def _stored_policy(
    retries: int, backoff: float, max_backoff: float, timeout: float | None
) -> TaskPolicy:
    """The policy a stored task carries (a few distinct ones: built and checked once each)."""
    return TaskPolicy(retries=retries, backoff=backoff, max_backoff=max_backoff, timeout=timeout)


def attempt_of(item: ClaimedTask) -> Attempt:
    policy = _stored_policy(item.retries, item.backoff, item.max_backoff, item.timeout)
    # Called after `resolve`: under a signing key, the carried part was verified with the rest.
    return Attempt(
        item.id,
        item.name,
        item.attempts,
        item.created_at,
        policy,
        lost=item.lost,
        error=item.error,
        queue=item.queue,
        carried=carried_in(item.payload),
    )


def resolve(
    registry: TaskRegistry,
    item: ClaimedTask,
    key: bytes | None = None,
    here: WrittenHere | None = None,
    max_size: int | None = None,
) -> tuple[Callable[..., Any], list[Any], dict[str, Any]]:
    """The function and arguments of a claimed task; `Unrunnable` says why there are none.

    With a signing `key`, a task whose signature is missing or wrong is not run. A task
    this process wrote (`here`) runs the call it checked then: what it stored. Arguments
    over `max_size` (`max_task_size`) are not decoded: no writer stores them, so they were
    written some other way, and decoding them could take the worker's memory."""
    if here is not None and here.call is not None:
        kept, kept_args, kept_kwargs = here.call
        return kept, list(kept_args), kept_kwargs
    payload = item.payload
    if key is not None:
        try:
            payload = verified(key, item.id, item.name, payload)
        except ValueError as exc:
            raise Unrunnable(f"refused: {exc}") from None
    if max_size is not None and len(payload) > max_size:
        raise Unrunnable(
            f"refused: its arguments are {len(payload)} bytes as JSON, over the limit of "
            f"{max_size} (Runner(max_task_size=...)); no writer stores such a task, so it was "
            "written outside backbeat (or by a runner with a larger max_task_size)"
        )
    func = registry.get(item.name)
    if func is None:
        raise Unrunnable(
            f"unknown task {item.name!r}: this app registered no function by that "
            "name (@task, a route's background=, or runner.register); "
            f"it knows {len(registry)} task name(s)"
        )
    try:
        args, kwargs = decode_arguments(func, payload)
    except ArgumentError as exc:
        raise Unrunnable(str(exc)) from None
    return func, list(args), kwargs


def settlement_for(receipt: str, attempt: Attempt, outcome: Outcome) -> Settlement:
    if outcome.state is SUCCEEDED:
        try:
            result = encode_result(outcome.result)
        except ArgumentError as exc:
            logger.warning(
                "Background task %r (id %s) succeeded, but its result is not stored: %s",
                attempt.name,
                attempt.id,
                exc,
                extra=about_task(attempt.id, attempt.name, attempt.number, attempt.queue),
            )
            result = None
        return Settlement(receipt, SUCCEEDED, result=result)
    retry_at = None if outcome.retry_in is None else time.time() + outcome.retry_in
    return Settlement(receipt, outcome.state, None, outcome.error, outcome.traceback, retry_at)
