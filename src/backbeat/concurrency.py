"""Turning any callable into an async one, and the threads sync tasks run in.

Sync task functions run in worker threads through backbeat's own capacity
limiter, so a burst of slow sync tasks can never starve the app's sync
endpoints (which share anyio's default 40-token limiter) or the other way round.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
from collections.abc import Awaitable, Callable
from inspect import CO_COROUTINE
from types import FunctionType
from typing import Any, TypeVar

import anyio
import anyio.to_thread

T = TypeVar("T")

DEFAULT_THREAD_LIMIT = 20

_thread_limit = DEFAULT_THREAD_LIMIT
_limiter: anyio.CapacityLimiter | None = None


def set_thread_limit(total: int) -> None:
    """Set how many sync tasks may run in worker threads at once (default 20)."""
    global _thread_limit
    if not isinstance(total, int) or isinstance(total, bool) or total < 1:
        raise ValueError(f"thread limit must be a positive int, got {total!r}")
    _thread_limit = total
    if _limiter is not None:
        _limiter.total_tokens = total


def thread_limiter() -> anyio.CapacityLimiter:
    """The limiter every sync task goes through (created on first use, inside a loop)."""
    global _limiter
    if _limiter is None:
        _limiter = anyio.CapacityLimiter(_thread_limit)
    return _limiter


def is_async_callable(obj: object) -> bool:
    """True for coroutine functions, partials of them and objects with an async __call__."""
    while isinstance(obj, functools.partial):
        obj = obj.func
    if inspect.iscoroutinefunction(obj):
        return True
    # An instance with `async def __call__`: look on the class, as the call itself does.
    return inspect.iscoroutinefunction(getattr(type(obj), "__call__", None))  # noqa: B004


def in_a_thread(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """An async function that runs the sync callable `func` in a worker thread.

    A real coroutine function, so ``inspect.iscoroutinefunction`` (and Lilya's and
    Starlette's checks) say so; ``__wrapped__`` is `func`, and `synchronous(f)`
    tells such a wrapper apart from an async function written as one.
    """

    async def run_sync(*args: Any, **kwargs: Any) -> Any:
        result = await run_in_thread(func, *args, **kwargs)
        if inspect.isawaitable(result):
            # A callable object whose __call__ hands back an awaitable (another framework's
            # async wrapper, a partial of an async function): run what it meant to run.
            return await result
        return result

    for attribute in ("__module__", "__name__", "__qualname__", "__doc__"):
        with contextlib.suppress(AttributeError):
            setattr(run_sync, attribute, getattr(func, attribute))
    run_sync.__wrapped__ = func  # type: ignore[attr-defined]
    run_sync.__backbeat_sync__ = True  # type: ignore[attr-defined]
    return run_sync


def synchronous(func: Callable[..., Any]) -> Callable[..., Any] | None:
    """The sync callable `in_a_thread` wrapped, if `func` is such a wrapper."""
    if getattr(func, "__backbeat_sync__", False):
        wrapped: Callable[..., Any] = func.__wrapped__  # type: ignore[attr-defined]
        return wrapped
    return None


async def run_in_thread(func: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a sync callable in a worker thread under backbeat's limiter.

    The caller's contextvars are copied into the thread (anyio does this). A
    thread cannot be interrupted: when the caller is cancelled (a timeout, a
    shutdown) it stops waiting at once and the thread finishes on its own.
    """
    if kwargs:
        func = functools.partial(func, **kwargs)
    return await anyio.to_thread.run_sync(
        func, *args, limiter=thread_limiter(), abandon_on_cancel=True
    )


def enforce_async_callable(func: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    """Return `func` if calling it gives an awaitable, else a wrapper that runs it in a thread.

    Raises TypeError, naming the object, for anything that is not callable.
    """
    if type(func) is FunctionType:  # the common case, without inspect's generality
        return func if func.__code__.co_flags & CO_COROUTINE else in_a_thread(func)
    if not callable(func):
        raise TypeError(f"a background task needs a callable, got {func!r} ({type(func).__name__})")
    if is_async_callable(func):
        return func
    return in_a_thread(func)


def in_event_loop() -> bool:
    """Whether this thread is running an event loop (sync code must not block it)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True
