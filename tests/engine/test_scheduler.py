"""engine.scheduler: every process tries each tick, the store lets one enqueue it.

Time comes from an injected clock: the tests step it (across DST changes, over a full
stop) and call `run_once`, as the scheduler's loop does at each tick.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from backbeat.engine.scheduler import Scheduler
from backbeat.schedules import make_schedule
from backbeat.stores import open_store
from backbeat.stores.base import STILL_RUNNING
from tests.stores.rows import new_task

pytestmark = pytest.mark.anyio

BERLIN = ZoneInfo("Europe/Berlin")


def job() -> None:
    pass


class Clock:
    def __init__(self, moment: float) -> None:
        self.now = moment

    def __call__(self) -> float:
        return self.now


def task_for(schedule, tick):
    task = new_task(schedule.name)
    task.due_at = tick
    return task


@pytest.fixture
async def store(db):
    opened = open_store(db)
    await opened.open()
    yield opened
    await opened.close()


async def due_times(store, name, zone=BERLIN):
    tasks = await store.list_tasks(name=name, limit=10_000)
    return sorted(datetime.fromtimestamp(t.due_at, zone).strftime("%d %H:%M %Z") for t in tasks)


async def step_through(schedulers, clock, start, end, step):
    clock.now = start
    while clock.now < end:
        for scheduler in schedulers:
            due = await scheduler.run_once()
            assert due is None or due > clock.now  # never a time passed: that would spin
        clock.now += step


def berlin(text):
    return datetime.fromisoformat(text).replace(tzinfo=BERLIN).timestamp()


@pytest.mark.parametrize(
    ("first_day", "expected"),
    [
        ("2026-03-28", ["28 02:30 CET", "29 03:00 CEST", "30 02:30 CEST"]),  # spring forward
        ("2026-10-24", ["24 02:30 CEST", "25 02:30 CEST", "26 02:30 CET"]),  # fall back
    ],
)
async def test_a_daily_0230_job_runs_once_a_day_across_a_dst_change(store, first_day, expected):
    daily = make_schedule(job, name="nightly", cron="30 2 * * *", tz="Europe/Berlin")
    start = berlin(f"{first_day}T00:00:00")
    clock = Clock(start - 86400 + 9001)  # 02:30:01 the day before: its tick, on time
    schedulers = [Scheduler(store, [daily], task_for, clock=clock) for _ in range(2)]
    await schedulers[0].run_once()
    # Two processes, each looking every 5 minutes (of injected time) for three days.
    await step_through(schedulers, clock, start, start + 3 * 86400, 300)
    assert (await due_times(store, "nightly"))[1:] == expected


async def test_two_processes_enqueue_each_tick_once_and_obey_a_pause(store):
    clock = Clock(berlin("2026-12-02T10:00:00"))
    minutely = make_schedule(job, name="minutely", cron="* * * * *", tz="Europe/Berlin")
    first, second = (Scheduler(store, [minutely], task_for, clock=clock) for _ in range(2))
    await step_through([first, second], clock, clock.now, clock.now + 180, 7)
    assert await due_times(store, "minutely") == ["02 10:00 CET", "02 10:01 CET", "02 10:02 CET"]
    assert await store.pause_schedule("minutely", True)
    await step_through([second, first], clock, clock.now, clock.now + 120, 7)
    [record] = await store.schedules()
    assert (record.paused, record.note, record.last_tick) == (
        True,
        "paused",
        berlin("2026-12-02T10:05:00"),
    )
    assert len(await due_times(store, "minutely")) == 3
    assert await store.pause_schedule("minutely", False)
    await step_through([first, second], clock, clock.now, clock.now + 60, 7)
    assert (await due_times(store, "minutely"))[3:] == ["02 10:06 CET"]


@pytest.mark.parametrize(
    ("missed", "expected"),
    [
        ("latest", ["02 12:00 CET"]),
        ("all", ["02 11:57 CET", "02 11:58 CET", "02 11:59 CET", "02 12:00 CET"]),
        ("skip", []),
    ],
)
async def test_ticks_missed_while_everything_was_down(store, missed, expected):
    clock = Clock(berlin("2026-12-02T10:00:00") + 1)
    minutely = make_schedule(
        job, name="minutely", cron="* * * * *", tz="Europe/Berlin", missed=missed, catch_up=4
    )
    await Scheduler(store, [minutely], task_for, clock=clock).run_once()
    # Every process stops at 10:00 and the first comes back at 12:00:30.
    clock.now = berlin("2026-12-02T12:00:30")
    await Scheduler(store, [minutely], task_for, clock=clock).run_once()
    assert (await due_times(store, "minutely"))[1:] == expected
    [record] = await store.schedules()
    assert record.last_tick == berlin("2026-12-02T12:00:00")
    if missed == "skip":
        assert record.note == "skipped: missed by 30s (missed='skip')"


async def test_a_changed_rule_takes_effect_at_once_without_catching_up(store):
    clock = Clock(berlin("2026-12-02T10:00:00") + 1)
    hourly = make_schedule(job, name="report", cron="0 * * * *", tz="Europe/Berlin", missed="all")
    await Scheduler(store, [hourly], task_for, clock=clock).run_once()
    # Redeployed at 10:21 with a rule that would have ticked at 10:05 ... 10:20.
    often = make_schedule(job, name="report", cron="*/5 * * * *", tz="Europe/Berlin", missed="all")
    redeployed = Scheduler(store, [often], task_for, clock=clock)
    await step_through(
        [redeployed], clock, berlin("2026-12-02T10:21:00"), berlin("2026-12-02T10:31:00"), 20
    )
    assert await due_times(store, "report") == ["02 10:00 CET", "02 10:25 CET", "02 10:30 CET"]
    [record] = await store.schedules()
    assert record.rule == "cron */5 * * * * Europe/Berlin"


async def test_skip_if_running_skips_ticks_while_the_last_one_waits(store):
    clock = Clock(berlin("2026-12-02T10:00:00") + 1)
    busy = make_schedule(job, name="sync", every=60, skip_if_running=True)
    scheduler = Scheduler(store, [busy], task_for, clock=clock)
    await step_through([scheduler], clock, clock.now, clock.now + 150, 10)
    assert len(await due_times(store, "sync")) == 1  # nobody runs it: it is still pending
    [record] = await store.schedules()
    assert record.note == STILL_RUNNING


async def test_the_next_wake_is_the_soonest_tick_of_any_schedule(store):
    clock = Clock(berlin("2026-12-02T10:00:20"))
    schedules = [
        make_schedule(job, name="a", every=60),
        make_schedule(job, name="b", cron="*/15 * * * * *"),
    ]
    assert await Scheduler(store, schedules, task_for, clock=clock).run_once() == berlin(
        "2026-12-02T10:00:30"
    )
    assert await Scheduler(store, [], task_for, clock=clock).run_once() is None
