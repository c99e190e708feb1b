"""Turning any callable into an async one, and the threads sync tasks run in.

Sync task functions run in worker threads through backbeat's own capacity
limiter, so a burst of slow sync tasks can never starve the app's sync
endpoints (which share anyio's default 40-token limiter) or the other way round.
"""

from __future__ import annotations

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


class AsyncCallable:
    """Wraps a sync callable: calling it returns an awaitable that runs it in a thread."""

    __slots__ = ("__wrapped__", "_func")

    def __init__(self, func: Callable[..., Any]) -> None:
        self._func = func
        self.__wrapped__ = func

    def __call__(self, *args: Any, **kwargs: Any) -> Awaitable[Any]:
        return run_in_thread(self._func, *args, **kwargs)

    def __repr__(self) -> str:
        return f"AsyncCallable({self._func!r})"


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
        return func if func.__code__.co_flags & CO_COROUTINE else AsyncCallable(func)
    if not callable(func):
        raise TypeError(f"a background task needs a callable, got {func!r} ({type(func).__name__})")
    if is_async_callable(func):
        return func
    return AsyncCallable(func)
