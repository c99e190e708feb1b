"""What a store could not run, found when the app starts rather than request by request.

A route's ``background=`` is declared once and runs for every request: with a
store, each of its tasks must be found by name in another process and have
arguments that JSON keeps. Whatever fails that would fail every request (a
500 each time), so it is found before the first one:

* `declare_route_tasks` registers every route's declared task with the runner
  that serves the route (mounted routes, apps mounted in apps and the routes
  of an app wrapped by `BackbeatMiddleware` too) and returns what cannot be;
* `check_app` is what the lifespan runs where the runner starts: it raises
  `UnrunnableTasks`, one line per problem, and the app does not start;
* ``backbeat check MODULE:APP`` prints the same list (`report`).

Only what is declared can be checked ahead: tasks added while a request is
served (``tasks.add_task(...)``, a response's own ``background``) are still
checked when they are stored, request by request (a 500 with a log line that
says what to do).
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from dataclasses import dataclass

from backbeat.routing import declare_task_modules
from backbeat.runner import Runner
from backbeat.tasks import BackgroundTask, BackgroundTasks

__all__ = [
    "Problem",
    "UnrunnableTasks",
    "check_app",
    "declare_route_tasks",
    "problems_of",
    "report",
]

# An app with more reachable objects than this is not walked further (a cycle guard).
_MOST_VISITED = 100_000


@dataclass(frozen=True)
class Problem:
    """A route's task that its store could not run: where, which function, and why."""

    route: str  # "POST /api/remind"
    task: str  # the task's name, as its log lines show it
    reason: str  # why a store cannot run it, and what to do

    def __str__(self) -> str:
        return f"{self.route}: task {self.task!r}: {self.reason}"


class UnrunnableTasks(RuntimeError):
    """Routes declare tasks that the app's store could not run: the app does not start."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__(report(problems))


def report(problems: list[Problem]) -> str:
    """The problems, one line each, under a line that says what they mean."""
    lines = [
        f"backbeat: {len(problems)} task(s) declared by the app's routes cannot be run from "
        "its store; every request to these routes would answer 500:"
    ]
    lines.extend(f"  {problem}" for problem in problems)
    return "\n".join(lines)


def check_app(runner: Runner, app: object) -> None:
    """Declare the app's task modules and route tasks to the runners that serve them;
    `UnrunnableTasks` if any route's task could not be run from a store."""
    problems = problems_of(runner, app)
    if problems:
        raise UnrunnableTasks(problems)


def problems_of(runner: Runner, app: object) -> list[Problem]:
    """`check_app`'s declarations, and the problems as a list (``backbeat check``)."""
    declare_task_modules(runner, app)
    return declare_route_tasks(runner, app)


def declare_route_tasks(runner: Runner, app: object) -> list[Problem]:
    """Register every route's ``background=`` with the runner that serves the route (those
    of runners with a store); the tasks that cannot be registered or stored, as problems."""
    problems: list[Problem] = []
    for owner, route, task in route_tasks(runner, app):
        if not owner.durable:
            continue  # in memory, a closure runs as well as anything
        try:
            owner.register_tasks(task)
        except (TypeError, ValueError) as exc:
            problems.append(Problem(route, task.name, str(exc)))
    return problems


def route_tasks(runner: Runner, app: object) -> Iterator[tuple[Runner, str, BackgroundTask]]:
    """(runner serving the route, "METHODS /path", task) for each task a route declares,
    members of a collection one by one. An app with its own runner (an `App` mounted in
    another) serves its routes with it."""
    seen: set[int] = set()
    # Depth first; an object's `app`/`router`/`handler` before its `routes`, so that a
    # mounted App is reached (and its runner known) before the routes Mount repeats.
    pending: list[tuple[object, str, Runner]] = [(app, "", runner)]
    while pending and len(seen) < _MOST_VISITED:
        item, prefix, owner = pending.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, list | tuple):
            pending.extend((member, prefix, owner) for member in reversed(item))
            continue
        own = getattr(item, "runner", None)
        if isinstance(own, Runner):
            owner = own
        path = getattr(item, "path", None)
        here = prefix.rstrip("/") + path if isinstance(path, str) else prefix
        background = getattr(item, "background", None)
        if isinstance(background, BackgroundTask):
            where = f"{_methods(item)}{here or '/'}"
            for task in _leaves(background):
                yield owner, where, task
        for name in ("routes", "route_handlers"):  # Starlette's and Litestar's
            routes = getattr(item, name, None)
            if isinstance(routes, list):
                pending.append((routes, here, owner))
        for name in ("handler", "router", "app"):
            found = getattr(item, name, None)
            # A function or a bound method is an endpoint: nothing to walk into.
            if found is not None and not (inspect.isfunction(found) or inspect.ismethod(found)):
                pending.append((found, here, owner))


def _methods(route: object) -> str:
    methods = getattr(route, "methods", None) or getattr(route, "http_methods", None)
    if not methods:
        return ""
    shown = sorted(str(method) for method in methods if method != "HEAD") or ["HEAD"]
    return ",".join(shown) + " "


def _leaves(task: BackgroundTask) -> Iterator[BackgroundTask]:
    if isinstance(task, BackgroundTasks):
        for member in task.tasks:
            yield from _leaves(member)
    else:
        yield task
