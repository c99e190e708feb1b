"""`ScheduleList`: a runner's periodic tasks, each name once.

They come from two places: `Runner.schedule(...)` adds one at a time (before or after the
start), and at start the runner gathers those declared with ``@task(cron=...)``. The engine
that will enqueue their ticks checks each one (`Engine.check_schedule`), so that a schedule
whose task could not be stored fails where it is made, not at its first tick.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from backbeat.engine.protocol import Engine
from backbeat.schedules import Schedule, make_schedule
from backbeat.tasks import declared_schedules, qualified_name, task_policy


class ScheduleList:
    """The schedules of one runner, shared with whichever engine it holds."""

    def __init__(self) -> None:
        # The engine keeps this very list (`Engine.schedules`), so that its scheduler,
        # already running, sees a schedule added later.
        self.schedules: list[Schedule] = []

    def add(
        self, engine: Engine, func: Callable[..., Any], name: str | None, **options: Any
    ) -> Schedule:
        """`Runner.schedule`: the new schedule, named after its task unless `name` is given;
        ValueError or TypeError now for a bad one, or for a name taken already."""
        policy = task_policy(func)
        made = make_schedule(
            func,
            name=name or (policy.name if policy and policy.name else qualified_name(func)),
            **options,
        )
        if any(known.name == made.name for known in self.schedules):
            raise ValueError(
                f"a schedule named {made.name!r} exists already: give this one another name="
            )
        engine.check_schedule(made)
        self.schedules.append(made)
        engine.schedule_added()
        return made

    def gather_declared(self, engine: Engine) -> None:
        """At start: hand the engine the @task(cron=...) schedules it does not have yet;
        ValueError for one whose name a `Runner.schedule` schedule took."""
        names = {known.name for known in self.schedules}
        declared = [found for found in declared_schedules() if found not in self.schedules]
        for found in declared:
            if found.name in names:
                raise ValueError(
                    f"two schedules are named {found.name!r} (one from @task, one from "
                    "runner.schedule): give one another name="
                )
        engine.gather_schedules(declared)
