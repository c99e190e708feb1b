"""Which functions a durable runner may run: only those its app registered.

A stored task names its function; the worker looks the name up here. Nothing
is imported because a store says so, so a row written by anyone can only ever
run code the app itself declared (`@task`, a route's ``background=``, or
``runner.register(fn)``).

A durable task must be a named, module-level function: `@task(name=...)`, or
a function whose ``module:qualname`` finds it again in another process.
Lambdas, closures, bound methods and partials cannot be found by name, so
they are a TypeError that says why.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from backbeat.tasks import qualified_name, task_policy


def durable_name(func: Callable[..., Any]) -> str:
    """The name a durable task is stored under; TypeError if `func` cannot have one."""
    if isinstance(func, functools.partial):
        raise TypeError(
            f"a durable task cannot be a functools.partial ({func!r}): its bound arguments "
            "cannot be stored by name; pass them as task arguments instead"
        )
    if inspect.ismethod(func):
        raise TypeError(
            f"a durable task cannot be a bound method ({qualified_name(func)}): the object it "
            "is bound to cannot be stored; use a module-level function"
        )
    policy = task_policy(func)
    if policy is not None and policy.name:
        return policy.name
    if not (inspect.isfunction(func) or inspect.iscoroutinefunction(func)):
        raise TypeError(
            f"a durable task must be a function, got {func!r}; use a module-level function "
            "or give it a name with @task(name=...)"
        )
    qualname = func.__qualname__
    if func.__name__ == "<lambda>":
        raise TypeError(
            f"a durable task cannot be a lambda ({func.__module__}:{qualname}): it has no name "
            "another process can find; use a def, or @task(name=...)"
        )
    if "<locals>" in qualname:
        raise TypeError(
            f"a durable task cannot be a closure or a function defined inside another "
            f"({func.__module__}:{qualname}): another process cannot find it by name; "
            "define it at module level, or name it with @task(name=...)"
        )
    return f"{func.__module__}:{qualname}"


class TaskRegistry:
    """Names → functions, for the tasks an app declared."""

    def __init__(self) -> None:
        self._functions: dict[str, Callable[..., Any]] = {}
        self._names: dict[int, str] = {}  # id(function) -> name, for the hot path

    def register(self, func: Callable[..., Any]) -> str:
        name = self._names.get(id(func))
        if name is not None and self._functions.get(name) is func:
            return name
        name = durable_name(func)
        known = self._functions.get(name)
        if known is not None and known is not func:
            raise ValueError(
                f"two different functions are registered as task {name!r}: "
                f"{qualified_name(known)} and {qualified_name(func)}"
            )
        self._functions[name] = func
        self._names[id(func)] = name
        return name

    def get(self, name: str) -> Callable[..., Any] | None:
        return self._functions.get(name)

    def __len__(self) -> int:
        return len(self._functions)
