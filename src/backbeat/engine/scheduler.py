"""Periodic tasks, tried by every process: the store lets exactly one enqueue each tick.

Every started runner with a store runs a `Scheduler` over the app's schedules (declared
with ``@task(cron=...)`` or `Runner.schedule`): there is no "beat" process to forget to
run, or to run twice. At each tick of any schedule it reads the store's records (a pause
or a tick handled elsewhere shows there), asks `backbeat.schedules.plan` what to do, and
hands each tick to `Store.fire_schedule`, which handles it once: the first process there
enqueues an ordinary task (retries, status, metrics as for any other); the rest find it
done. The clock is injected, so tests step time instead of sleeping.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable

from backbeat.schedules import Schedule, plan, shown_time
from backbeat.stores.base import NewTask, ScheduleRecord, Store, StoreError

logger = logging.getLogger("backbeat")

# The longest the scheduler sleeps: a schedule added later, or a clock stepped by the
# system, is seen within this many seconds.
LONGEST_SLEEP = 60.0


class Scheduler:
    """Tries every tick of `schedules` against `store` (see the module's docstring)."""

    def __init__(
        self,
        store: Store,
        schedules: list[Schedule],
        make_task: Callable[[Schedule, int], NewTask],
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.schedules = schedules  # the runner's own list: one added later is seen
        self.make_task = make_task
        self.clock = clock
        self._declared: set[str] = set()
        self._wake = asyncio.Event()

    def poke(self) -> None:
        """Look again now (a schedule was added)."""
        self._wake.set()

    async def run_once(self) -> float | None:
        """Handle every tick due now; returns when the next one is due (None: no schedule)."""
        new = [s for s in self.schedules if s.name not in self._declared]
        if new:
            await self.store.declare_schedules([(s.name, s.rule.text) for s in new])
            self._declared.update(s.name for s in new)
        now = self.clock()
        records = {record.name: record for record in await self.store.schedules()}
        for schedule in self.schedules:
            record = records.get(schedule.name)
            try:
                await self._handle(schedule, record, now)
            except StoreError:
                raise  # the round is tried again (`run`)
            except Exception:  # this schedule's, not the others': they go on
                logger.exception("backbeat: schedule %r: cannot handle its tick", schedule.name)
        if not self.schedules:
            return None
        soonest = min(schedule.rule.after(math.floor(now)) for schedule in self.schedules)
        return max(soonest, math.floor(now) + 1)  # never a time passed: no busy loop

    async def _handle(self, schedule: Schedule, record: ScheduleRecord | None, now: float) -> None:
        rule = None if record is None else record.rule
        last_tick = None if record is None else record.last_tick
        for tick in plan(schedule, rule, last_tick, now):
            task = self.make_task(schedule, tick.at) if tick.enqueue else None
            fired = await self.store.fire_schedule(
                schedule.name,
                schedule.rule.text,
                tick.at,
                task,
                tick.note,
                skip_if_running=schedule.skip_if_running,
            )
            if fired is not None:
                _log(schedule, tick.at, fired.note or "", fired.last_task)

    async def run(self) -> None:
        """Until cancelled: handle the ticks as they come; a store error is logged and
        the round tried again (a tick seen late is still enqueued, by `missed`)."""
        failures = 0
        while True:
            self._wake.clear()
            try:
                due = await self.run_once()
                failures = 0
            except Exception as exc:  # a store error or a bug: the schedules go on
                failures += 1
                due = self.clock() + min(0.5 * 2**failures, 10.0)
                logger.error(
                    "backbeat: cannot handle schedules (failure %d in a row, trying again): %s",
                    failures,
                    exc,
                    exc_info=not isinstance(exc, StoreError),
                )
            sleep = LONGEST_SLEEP if due is None else due - self.clock()
            try:
                async with asyncio.timeout(min(max(sleep, 0.0), LONGEST_SLEEP)):
                    await self._wake.wait()
            except TimeoutError:
                pass


def _log(schedule: Schedule, tick: int, note: str, task_id: str | None) -> None:
    zone = getattr(schedule.rule, "zone", "UTC")
    if note == "enqueued":
        logger.info(
            "backbeat: schedule %r: tick %s enqueued as task %s",
            schedule.name,
            shown_time(tick, zone),
            task_id,
        )
    else:
        logger.info(
            "backbeat: schedule %r: tick %s %s", schedule.name, shown_time(tick, zone), note
        )
