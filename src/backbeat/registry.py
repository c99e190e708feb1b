"""Which functions a durable runner may run: only those its app declared.

A stored task names its function; the worker looks the name up here. Nothing
is imported because a store says so, so a row written by anyone can only ever
run code the app itself declared:

* `@task` functions, a route's ``background=``, and ``runner.register(fn)``;
* plain module-level functions defined in one of the app's *task modules*:
  the modules that define its route handlers (`App` and `BackbeatMiddleware`
  declare them; ``runner.register_module(name)`` adds more). This is what
  makes ``tasks.add_task(audit, n)``, with ``audit`` a plain function next to
  the handler, run after a restart or in a worker. Only a function defined in
  that very module is found (not one imported into it, not a method, not a
  name starting with ``_``), and only if the module is already imported.

The process that writes a task decides with the same rules, before the
response: a function that another process could not find is refused there
(a TypeError, so the client gets a 500, never a 2xx for a task that would
fail later).

A durable task must be a named, module-level function: `@task(name=...)`, or
a function whose ``module:qualname`` finds it again in another process.
Lambdas, closures, bound methods and partials cannot be found by name, so
they are a TypeError that says why.
"""

from __future__ import annotations

import functools
import inspect
import sys
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
        self.modules: set[str] = set()  # task modules: their plain functions may run

    def add_module(self, module: str) -> None:
        if not isinstance(module, str) or not module:
            raise TypeError(f"a task module is named by a string, got {module!r}")
        self.modules.add(module)

    def name_to_store(self, func: Callable[..., Any]) -> str:
        """The name to store `func` under, if another process will find it; else TypeError."""
        name = self._names.get(id(func))
        if name is not None and self._functions.get(name) is func:
            return name
        name = durable_name(func)
        if task_policy(func) is not None or self._in_task_module(name) is func:
            return self.register(func)
        raise TypeError(
            f"task function {qualified_name(func)} is not declared to this app, so a worker "
            "(or this app after a restart) could not find it by name: decorate it with @task, "
            f"call runner.register({getattr(func, '__name__', 'func')}) at import time, or define "
            "it in a module of the app's route handlers (or add its module with "
            "runner.register_module(...))"
        )

    def _in_task_module(self, name: str) -> Callable[..., Any] | None:
        """The plain function `name` ("module:function") of a task module, if there is one."""
        module_name, _, function_name = name.partition(":")
        if module_name not in self.modules or not function_name.isidentifier():
            return None
        if function_name.startswith("_"):
            return None
        module = sys.modules.get(module_name)  # never imported because a store said so
        found = getattr(module, function_name, None)
        if not (inspect.isfunction(found) and found.__module__ == module_name):
            return None
        if found.__qualname__ != function_name or task_policy(found) is not None:
            return None
        return found

    def register(self, func: Callable[..., Any]) -> str:
        name = self._names.get(id(func))
        if name is not None and self._functions.get(name) is func:
            return name
        name = durable_name(func)
        known = self._functions.get(name)
        if known is not None and known is not func:
            raise ValueError(
                f"two different functions are registered as task {name!r}: "
                f"{qualified_name(known)} and {qualified_name(func)}; a worker could not "
                "tell which to run: give one another name with @task(name=...)"
            )
        self._functions[name] = func
        self._names[id(func)] = name
        return name

    def get(self, name: str) -> Callable[..., Any] | None:
        func = self._functions.get(name)
        if func is None and (found := self._in_task_module(name)) is not None:
            self.register(found)
            return found
        return func

    def __len__(self) -> int:
        return len(self._functions)
