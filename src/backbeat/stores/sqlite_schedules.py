"""The SQLite store's schedules (`backbeat.schedules`): one tick handled in one
transaction, so that of the processes sharing the file exactly one enqueues it (the table
is in `backbeat.stores.sqlite_sql`'s schema)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from backbeat.stores.base import NewTask, ScheduleRecord
from backbeat.stores.schedule_ticks import decide_tick
from backbeat.stores.sqlite_sql import insert_groups, insert_row

COLUMNS = "name, rule, last_tick, last_task, note, paused, updated_at"
SELECT_ALL = f"SELECT {COLUMNS} FROM backbeat_schedules ORDER BY name"
DECLARE = (
    "INSERT INTO backbeat_schedules (name, rule, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO NOTHING"
)
PAUSE = "UPDATE backbeat_schedules SET paused = ?, updated_at = ? WHERE name = ?"
_FOUND = f"SELECT {COLUMNS} FROM backbeat_schedules WHERE name = ?"
_LIVE_TASK = "SELECT 1 FROM backbeat_tasks WHERE id = ? AND state IN ('held', 'pending', 'running')"
_HANDLED = (
    "UPDATE backbeat_schedules SET rule = ?, last_tick = ?, last_task = ?, note = ?, "
    "updated_at = ? WHERE name = ?"
)


def record(row: Any) -> ScheduleRecord:
    name, rule, last_tick, last_task, note, paused, updated_at = row
    return ScheduleRecord(name, rule, last_tick, last_task, note, bool(paused), updated_at)


def fire(
    conn: sqlite3.Connection,
    name: str,
    rule: str,
    tick: int,
    task: NewTask | None,
    note: str,
    skip_if_running: bool,
) -> ScheduleRecord | None:
    """`Store.fire_schedule`, inside the writer's transaction."""
    now = time.time()
    conn.execute(DECLARE, (name, rule, now))
    found = record(conn.execute(_FOUND, (name,)).fetchone())
    decision = decide_tick(found, tick, task, note, skip_if_running)
    if decision is None:
        return None
    previous = decision.unless_running
    if previous is not None and conn.execute(_LIVE_TASK, (previous,)).fetchone() is not None:
        decision = decision.still_running()
    last_task = found.last_task
    if decision.enqueue is not None:
        [written] = insert_groups([[insert_row(decision.enqueue)]], conn)
        if isinstance(written, BaseException):
            raise written
        [last_task] = written
    conn.execute(_HANDLED, (rule, tick, last_task, decision.note, now, name))
    return ScheduleRecord(name, rule, tick, last_task, decision.note, found.paused, now)
