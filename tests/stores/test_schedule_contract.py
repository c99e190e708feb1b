"""The schedule part of the store contract (`Store.fire_schedule` and its kin), on every store."""

import asyncio

import pytest

from backbeat.stores.base import STILL_RUNNING
from tests.stores.rows import new_task, succeeded

pytestmark = pytest.mark.anyio

RULE = "every 60s"


async def test_a_tick_is_handled_once_and_never_again(store):
    first = new_task()
    fired = await store.fire_schedule("report", RULE, 600, first)
    assert (fired.name, fired.last_tick, fired.last_task, fired.note) == (
        "report",
        600,
        first.id,
        "enqueued",
    )
    # The same tick (or an older one) again, from another process: nothing is added.
    assert await store.fire_schedule("report", RULE, 600, new_task()) is None
    assert await store.fire_schedule("report", RULE, 540, new_task()) is None
    assert (await store.counts())["pending"] == 1
    assert (await store.get(first.id)).state == "pending"
    [record] = await store.schedules()
    assert (record.last_tick, record.last_task, record.paused) == (600, first.id, False)


async def test_many_callers_at_once_enqueue_one_task_per_tick(store):
    async def everyone_tries(tick):
        return await asyncio.gather(
            *(store.fire_schedule("report", RULE, tick, new_task()) for _ in range(8))
        )

    for tick in (60, 120, 180):
        outcomes = await everyone_tries(tick)
        assert sum(outcome is not None for outcome in outcomes) == 1
    assert (await store.counts())["pending"] == 3


async def test_a_skipped_tick_is_noted_and_enqueues_nothing(store):
    fired = await store.fire_schedule("report", RULE, 60, None, "skipped: 300s late")
    assert (fired.last_tick, fired.last_task, fired.note) == (60, None, "skipped: 300s late")
    assert (await store.counts())["pending"] == 0


async def test_skip_if_running_waits_for_the_previous_tick_to_finish(store):
    first = new_task()
    await store.fire_schedule("sync", RULE, 60, first, skip_if_running=True)
    busy = await store.fire_schedule("sync", RULE, 120, new_task(), skip_if_running=True)
    assert (busy.note, busy.last_task) == (STILL_RUNNING, first.id)
    [claimed] = await store.claim("w", limit=1, lease=30)
    busy = await store.fire_schedule("sync", RULE, 180, new_task(), skip_if_running=True)
    assert busy.note == STILL_RUNNING
    await store.finish([succeeded(claimed)])
    second = new_task()
    fired = await store.fire_schedule("sync", RULE, 240, second, skip_if_running=True)
    assert (fired.note, fired.last_task) == ("enqueued", second.id)


async def test_paused_schedules_note_their_ticks_and_resume_at_the_next(store):
    await store.declare_schedules([("report", RULE)])
    assert await store.pause_schedule("report", True) is True
    assert await store.pause_schedule("unknown", True) is False
    paused = await store.fire_schedule("report", RULE, 60, new_task())
    assert (paused.note, paused.last_task, paused.paused) == ("paused", None, True)
    assert (await store.counts())["pending"] == 0
    assert await store.pause_schedule("report", False) is True
    resumed = await store.fire_schedule("report", RULE, 120, new_task())
    assert (resumed.note, resumed.paused) == ("enqueued", False)


async def test_declaring_adds_what_is_missing_and_keeps_what_is_known(store):
    await store.declare_schedules([("b", "every 5s"), ("a", "cron 0 * * * * UTC")])
    await store.fire_schedule("b", "every 5s", 10, new_task())
    # A redeploy with a new rule: the record keeps its state until the next tick says it.
    await store.declare_schedules([("b", "every 7s"), ("a", "cron 0 * * * * UTC")])
    records = await store.schedules()
    assert [(r.name, r.rule, r.last_tick) for r in records] == [
        ("a", "cron 0 * * * * UTC", None),
        ("b", "every 5s", 10),
    ]
    fired = await store.fire_schedule("b", "every 7s", 14, new_task())
    assert fired.rule == "every 7s"


async def test_a_tick_task_keeps_the_idempotency_key_rule(store):
    live = new_task(key="one-report")
    await store.enqueue([live])
    fired = await store.fire_schedule("report", RULE, 60, new_task(key="one-report"))
    assert fired.last_task == live.id
    assert (await store.counts())["pending"] == 1


async def test_a_tick_task_with_limits_waits_in_its_line_like_any_other(store):
    gated = new_task(rate_gate='["rate", "emails.send"]', rate_limit=1, rate_window=60.0)
    fired = await store.fire_schedule("report", RULE, 60, gated)
    assert fired.last_task == gated.id
    [claimed] = await store.claim("w", limit=5, lease=30)
    assert claimed.id == gated.id
    await store.fire_schedule(
        "report", RULE, 120, new_task(rate_gate=gated.rate_gate, rate_limit=1, rate_window=60.0)
    )
    assert await store.claim("w", limit=5, lease=30) == []  # its gate allows 1 a minute
