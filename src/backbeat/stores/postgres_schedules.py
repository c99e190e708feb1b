"""The PostgreSQL store's schedules (`backbeat.schedules`): one tick handled in one
transaction that holds the schedule's row, so that of the processes trying at once exactly
one enqueues it (the others wait for its commit, then see the tick handled)."""

from __future__ import annotations

import time
from typing import Any

from backbeat.stores.base import NewTask, ScheduleRecord
from backbeat.stores.postgres_sql import LIVE, Schema
from backbeat.stores.postgres_writes import insert_tasks
from backbeat.stores.schedule_ticks import decide_tick

COLUMNS = "name, rule, last_tick, last_task, note, paused, updated_at"
SELECT_ALL = f"SELECT {COLUMNS} FROM {{s}}.schedules ORDER BY name"
DECLARE = (
    "INSERT INTO {s}.schedules (name, rule, updated_at) "
    "SELECT name, rule, $3 FROM unnest($1::text[], $2::text[]) AS r(name, rule) "
    "ON CONFLICT (name) DO NOTHING"
)
PAUSE = "UPDATE {s}.schedules SET paused = $1, updated_at = $2 WHERE name = $3"
_HOLD = f"SELECT {COLUMNS} FROM {{s}}.schedules WHERE name = $1 FOR UPDATE"
_LIVE_TASK = f"SELECT EXISTS (SELECT 1 FROM {{s}}.tasks WHERE id = $1 AND state IN {LIVE})"
_HANDLED = (
    "UPDATE {s}.schedules SET rule = $1, last_tick = $2, last_task = $3, note = $4, "
    "updated_at = $5 WHERE name = $6"
)


def record(row: Any) -> ScheduleRecord:
    return ScheduleRecord(*row)


async def fire(
    conn: Any,
    sql: Schema,
    name: str,
    rule: str,
    tick: int,
    task: NewTask | None,
    note: str,
    skip_if_running: bool,
) -> ScheduleRecord | None:
    """`Store.fire_schedule`, in the caller's transaction."""
    now = time.time()
    await conn.execute(sql(DECLARE), [name], [rule], now)
    found = record(await conn.fetchrow(sql(_HOLD), name))
    decision = decide_tick(found, tick, task, note, skip_if_running)
    if decision is None:
        return None
    previous = decision.unless_running
    if previous is not None and await conn.fetchval(sql(_LIVE_TASK), previous):
        decision = decision.still_running()
    last_task = found.last_task
    if decision.enqueue is not None:
        [last_task] = await insert_tasks(conn, sql, [decision.enqueue])
    await conn.execute(sql(_HANDLED), rule, tick, last_task, decision.note, now, name)
    return ScheduleRecord(name, rule, tick, last_task, decision.note, found.paused, now)
