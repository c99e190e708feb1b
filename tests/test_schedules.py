"""backbeat.schedules: rules, their ticks in time zones, and the plan of what to enqueue."""

import asyncio
import itertools
import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from backbeat import Runner, task
from backbeat.schedules import ON_TIME, Cron, Every, make_rule, make_schedule, plan
from tests.conftest import recording


def at(text: str, zone: str = "UTC") -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone)).timestamp())


def job() -> None:
    pass


def test_every_ticks_at_multiples_of_its_interval_since_the_epoch():
    rule = Every(300)
    assert rule.text == "every 300s"
    assert rule.at_or_before(at("2026-12-02T10:07:00")) == at("2026-12-02T10:05:00")
    assert rule.at_or_before(at("2026-12-02T10:05:00")) == at("2026-12-02T10:05:00")
    assert rule.after(at("2026-12-02T10:05:00")) == at("2026-12-02T10:10:00")


def test_cron_ticks_in_its_time_zone():
    rule = Cron("0 9 * * MON-FRI", "America/New_York")
    friday_evening = at("2026-12-04T18:00:00", "America/New_York")
    assert rule.after(friday_evening) == at("2026-12-07T09:00:00", "America/New_York")
    assert rule.at_or_before(friday_evening) == at("2026-12-04T09:00:00", "America/New_York")
    assert rule.text == "cron 0 9 * * MON-FRI America/New_York"
    # Six fields: seconds first.
    assert Cron("*/15 * * * * *").after(at("2026-12-02T10:00:01")) == at("2026-12-02T10:00:15")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of cron= or every="),
        ({"cron": "* * * * *", "every": 60}, "exactly one of cron= or every="),
        ({"every": 0.5}, "whole number of seconds >= 1"),
        ({"every": timedelta(milliseconds=1500)}, "whole number of seconds >= 1"),
        ({"every": "5m"}, "must be a timedelta or seconds"),
        ({"every": 60, "tz": "Europe/Berlin"}, "tz= applies to cron="),
        ({"cron": "61 * * * *"}, "is not a cron expression"),
        ({"cron": "* * *"}, "is not a cron expression"),
        ({"cron": "* * * * *", "tz": "Mars/Olympus"}, "unknown time zone tz='Mars/Olympus'"),
        ({"cron": "0 30 2 * * *", "tz": "Europe/Berlin"}, "use five fields for it"),
    ],
)
def test_a_bad_rule_is_refused_with_what_is_wrong(options, message):
    with pytest.raises(ValueError, match=message):
        make_rule(options.get("cron"), options.get("every"), options.get("tz"))


def test_bad_schedule_options_are_refused_at_declaration():
    with pytest.raises(ValueError, match="missed= must be one of latest, all, skip"):
        make_schedule(job, name="j", every=60, missed="never")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="catch_up= must be an int >= 1"):
        make_schedule(job, name="j", every=60, catch_up=0)
    with pytest.raises(ValueError, match="max_lateness= must be"):
        make_schedule(job, name="j", every=60, max_lateness=-1)
    with pytest.raises(ValueError, match="name must be a non-empty str without spaces"):
        make_schedule(job, name="my job", every=60)
    with pytest.raises(TypeError, match=r"cannot call .* with its arguments"):
        make_schedule(job, name="j", every=60, args=(1,))
    with pytest.raises(TypeError, match="needs a function"):
        make_schedule("job", name="j", every=60)  # type: ignore[arg-type]


def test_task_decorator_checks_its_schedule_at_import_time():
    with pytest.raises(TypeError, match="cannot call"):

        @task(every=60)
        def needs_an_argument(customer: str) -> None: ...

    with pytest.raises(ValueError, match="need cron= or every="):

        @task(tz="Europe/Berlin")
        def zone_without_rule() -> None: ...

    with pytest.raises(ValueError, match="is not a cron expression"):

        @task(cron="every monday")
        def prose() -> None: ...


# --- the plan -------------------------------------------------------------------------------

MINUTELY = make_schedule(job, name="j", cron="* * * * *")
T0 = at("2026-12-02T10:00:00")


def ticks(planned):
    return [(tick.at - T0, tick.enqueue) for tick in planned]


def test_nothing_to_do_when_the_latest_tick_was_handled():
    assert plan(MINUTELY, MINUTELY.rule.text, T0, T0 + 30) == []


def test_the_next_tick_is_enqueued_once_due():
    assert ticks(plan(MINUTELY, MINUTELY.rule.text, T0, T0 + 60.2)) == [(60, True)]


def test_a_new_schedule_fires_an_on_time_tick_only():
    assert ticks(plan(MINUTELY, None, None, T0 + 1)) == [(0, True)]
    assert plan(MINUTELY, None, None, T0 + ON_TIME + 1) == []


def test_after_a_rule_change_there_is_no_catching_up():
    every_five = make_schedule(job, name="j", cron="*/5 * * * *", missed="all")
    # Handled at 10:00 under the old rule; now 10:21:02: 10:05-10:20 are not "missed".
    assert plan(every_five, "cron 0 * * * * UTC", T0, T0 + 21 * 60 + 2) == []
    assert ticks(plan(every_five, "cron 0 * * * * UTC", T0, T0 + 20 * 60 + 2)) == [(1200, True)]


def test_missed_latest_runs_the_latest_missed_tick_once():
    planned = plan(MINUTELY, MINUTELY.rule.text, T0, T0 + 3600 + 5)
    assert ticks(planned) == [(3600, True)]


def test_missed_all_runs_each_missed_tick_up_to_catch_up():
    everything = make_schedule(job, name="j", cron="* * * * *", missed="all", catch_up=3)
    assert ticks(plan(everything, everything.rule.text, T0, T0 + 120 + 5)) == [
        (60, True),
        (120, True),
    ]
    assert ticks(plan(everything, everything.rule.text, T0, T0 + 3600 + 5)) == [
        (3480, True),
        (3540, True),
        (3600, True),
    ]


def test_missed_skip_runs_nothing_that_was_missed():
    skipping = make_schedule(job, name="j", cron="* * * * *", missed="skip")
    [late] = plan(skipping, skipping.rule.text, T0, T0 + 3600 + ON_TIME + 5)
    assert (late.at - T0, late.enqueue) == (3600, False)
    assert late.note.startswith("skipped: missed by")
    assert ticks(plan(skipping, skipping.rule.text, T0, T0 + 3600 + 2)) == [(3600, True)]


def test_max_lateness_skips_a_tick_too_late_whatever_the_policy():
    strict = make_schedule(job, name="j", cron="* * * * *", missed="all", max_lateness=90)
    planned = plan(strict, strict.rule.text, T0, T0 + 180 + 5)
    assert ticks(planned) == [(60, False), (120, True), (180, True)]
    assert planned[0].note == "skipped: 125s late (max_lateness=90s)"


# --- time zones: Debian cron's rules, as cronsim follows them --------------------------------


def daily_ticks(rule, first_day: str, days: int, zone: str):
    start = at(f"{first_day}T00:00:00", zone)
    moment, found = start, []
    while True:
        moment = rule.after(moment)
        if moment >= start + days * 86400:
            return found
        found.append(datetime.fromtimestamp(moment, ZoneInfo(zone)))


def test_a_daily_0230_job_runs_once_on_the_spring_forward_day():
    # Europe/Berlin jumps from 02:00 to 03:00 on 2026-03-29: 02:30 does not exist.
    found = daily_ticks(Cron("30 2 * * *", "Europe/Berlin"), "2026-03-28", 3, "Europe/Berlin")
    assert [tick.strftime("%d %H:%M %Z") for tick in found] == [
        "28 02:30 CET",
        "29 03:00 CEST",  # at the jump, once
        "30 02:30 CEST",
    ]


def test_a_daily_0230_job_runs_once_on_the_fall_back_day():
    # On 2026-10-25 the clock passes 02:00-03:00 twice (CEST, then CET).
    found = daily_ticks(Cron("30 2 * * *", "Europe/Berlin"), "2026-10-24", 3, "Europe/Berlin")
    assert [tick.strftime("%d %H:%M %Z") for tick in found] == [
        "24 02:30 CEST",
        "25 02:30 CEST",  # the first 02:30 only
        "26 02:30 CET",
    ]


def test_an_hourly_wildcard_follows_the_real_clock_through_the_fall_back_hour():
    rule = Cron("0 * * * *", "Europe/Berlin")
    start = at("2026-10-25T01:30:00", "Europe/Berlin")
    moments = [rule.after(start)]
    for _ in range(3):
        moments.append(rule.after(moments[-1]))
    assert [b - a for a, b in itertools.pairwise(moments)] == [3600, 3600, 3600]


@pytest.mark.parametrize(
    ("expression", "zone", "day"),
    [
        ("30 2 * * *", "Europe/Berlin", "2026-10-24"),
        ("30 2 * * *", "Europe/Berlin", "2026-03-28"),
        ("0,30 2 * * *", "Europe/Berlin", "2026-10-24"),
        ("30 1 * * *", "America/New_York", "2026-10-31"),
        ("45 1 * * *", "Australia/Lord_Howe", "2026-04-04"),  # falls back half an hour
        ("*/30 * * * *", "Europe/Berlin", "2026-10-24"),
    ],
)
def test_ticks_never_go_back_through_a_dst_change(expression, zone, day):
    # Minute by minute over three days around the change: the next tick is always later,
    # the latest always at or before, and the latest never moves back.
    rule = Cron(expression, zone)
    start = at(f"{day}T00:00:00", zone)
    latest = None
    for moment in range(start, start + 3 * 86400, 60):
        assert rule.after(moment) > moment
        found = rule.at_or_before(moment)
        assert found <= moment
        assert latest is None or found >= latest
        latest = found
    six_fields_in_utc = Cron("0 30 2 * * *")  # no clock changes there: allowed
    assert six_fields_in_utc.after(at("2026-10-25T00:00:00")) == at("2026-10-25T02:30:00")


def test_ticks_are_the_same_instants_in_every_process_whatever_its_own_zone():
    rule = Cron("0 12 * * *", "Asia/Tokyo")
    noon_tokyo = datetime(2026, 12, 2, 12, tzinfo=ZoneInfo("Asia/Tokyo"))
    assert rule.at_or_before(int(noon_tokyo.timestamp()) + 5) == int(noon_tokyo.timestamp())
    assert datetime.fromtimestamp(int(noon_tokyo.timestamp()), UTC).hour == 3


# --- through a Runner --------------------------------------------------------------------

ran: list[float] = []


async def note_the_time(label: str) -> str:
    ran.append(time.time())
    return label


@pytest.mark.anyio
async def test_a_runner_enqueues_its_schedules_ticks_as_ordinary_tasks():
    ran.clear()
    runner = Runner(store="memory://")
    runner.schedule(note_the_time, every=1, args=["tick"], name="heartbeat")
    async with runner:
        deadline = time.monotonic() + 5
        while len(ran) < 3:
            assert time.monotonic() < deadline, "no three ticks ran in 5 s"
            await asyncio.sleep(0.02)
        [record] = await runner.store.schedules()
        assert (record.name, record.rule, record.note) == ("heartbeat", "every 1s", "enqueued")
        assert await runner.aresult(record.last_task, timeout=5) == "tick"
    # The first tick is the one just before the start (on time: ON_TIME); then one a second.
    assert ran[2] - ran[1] == pytest.approx(1.0, abs=0.25)


def test_runner_schedule_refuses_what_a_tick_could_not_store():
    runner = Runner(store="memory://")

    def closure() -> None: ...

    with pytest.raises(TypeError, match="cannot find it by name"):
        runner.schedule(closure, every=60)
    with pytest.raises(TypeError, match="cannot be stored"):
        runner.schedule(note_the_time, every=60, args=[object()])
    runner.schedule(note_the_time, every=60, args=["a"])
    with pytest.raises(ValueError, match=r"a schedule named 'tests\.test_schedules:note_the_time'"):
        runner.schedule(note_the_time, every=60, args=["b"])
    runner.schedule(note_the_time, every=60, args=["b"], name="second")
    assert [s.name for s in runner.schedules] == ["tests.test_schedules:note_the_time", "second"]


@pytest.mark.anyio
async def test_schedules_need_a_store():
    runner = Runner()
    runner.schedule(note_the_time, every=60, args=["a"])
    with pytest.raises(RuntimeError, match=r"runner\.schedule needs a runner with a store"):
        await runner.start()


@pytest.mark.anyio
async def test_a_schedule_added_to_a_running_runner_runs():
    ran.clear()
    async with Runner(store="memory://") as runner:
        runner.schedule(note_the_time, every=1, args=["late"])
        deadline = time.monotonic() + 5
        while not ran:
            assert time.monotonic() < deadline, "the schedule added while running never ran"
            await asyncio.sleep(0.02)


def partner_key(customer_id: object, **_: object) -> str:
    return customer_id  # type: ignore[return-value]  # an int: not a key


@task(rate_limit="10/m", rate_limit_key=partner_key)
async def call_partner(customer_id: object) -> None: ...


async def note_twice(label: str) -> str:
    ran.append(time.time())
    return label


def test_a_schedule_whose_task_could_not_be_stored_is_refused_at_schedule():
    runner = Runner(store="memory://")
    with pytest.raises(ValueError, match="rate_limit_key"):
        runner.schedule(call_partner, every=60, kwargs={"customer_id": 42})
    assert runner.schedules == []


@pytest.mark.anyio
async def test_one_schedule_that_fails_at_its_tick_does_not_stop_the_others():
    from backbeat.engine.scheduler import Scheduler

    ran.clear()
    runner = Runner(store="memory://")
    runner.register(note_twice)
    broken = make_schedule(note_twice, name="broken", every=1, args=["x"])
    fine = make_schedule(note_twice, name="fine", every=1, args=["y"])

    def make_task(schedule, tick):
        if schedule.name == "broken":
            raise RuntimeError("cannot build this one")
        return runner._engine.scheduled_task(schedule, tick)

    with recording("backbeat") as records:
        scheduler = Scheduler(runner.store, [broken, fine], make_task, clock=lambda: 120.5)
        await runner.store.open()
        await scheduler.run_once()
    assert [r.name for r in await runner.store.schedules()] == ["broken", "fine"]
    assert (await runner.store.schedules())[1].note == "enqueued"
    assert "schedule 'broken': cannot handle its tick" in records.messages()[0]


@pytest.mark.anyio
async def test_a_declared_schedule_may_not_share_a_name_with_a_runner_schedule(monkeypatch):
    from backbeat import tasks

    monkeypatch.setattr(tasks, "_declared_schedules", [])  # no other test's runner runs it

    @task(name="reports.hourly", every=3600)
    def hourly() -> None: ...

    runner = Runner(store="memory://")
    runner.schedule(note_the_time, every=60, args=["a"], name="reports.hourly")
    with pytest.raises(ValueError, match=r"two schedules are named 'reports\.hourly'"):
        await runner.start()
    assert not runner.running
    assert [s.name for s in runner.schedules] == ["reports.hourly"]


def test_task_declares_its_schedule_with_every_option(monkeypatch):
    from backbeat import tasks
    from backbeat.tasks import declared_schedules

    monkeypatch.setattr(tasks, "_declared_schedules", [])  # no other test's runner runs it

    @task(name="nightly.digest", cron="0 3 * * *", tz="Europe/Paris", missed="all", catch_up=3)
    def digest() -> None: ...

    [declared] = [s for s in declared_schedules() if s.name == "nightly.digest"]
    assert (declared.rule.text, declared.missed, declared.catch_up) == (
        "cron 0 3 * * * Europe/Paris",
        "all",
        3,
    )
    with pytest.raises(ValueError, match="catch_up needs cron= or every="):

        @task(catch_up=3)
        def no_rule() -> None: ...
