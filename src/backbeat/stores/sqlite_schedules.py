"""The SQLite store's schedules (`backbeat.schedules`): one tick handled in one
transaction, so that of the processes sharing the file exactly one enqueues it (the table
is in `backbeat.stores.sqlite_sql`'s schema)."""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from backbeat.stores.base import STILL_RUNNING, NewTask, ScheduleRecord
from backbeat.stores.sqlite_sql import insert_groups, insert_row

COLUMNS = "name, rule, last_tick, last_task, note, paused, updated_at"
SELECT_ALL = f"SELECT {COLUMNS} FROM backbeat_schedules ORDER BY name"
DECLARE = (
    "INSERT INTO backbeat_schedules (name, rule, updated_at) VALUES (?, ?, ?) "
    "ON CONFLICT (name) DO NOTHING"
)
PAUSE = "UPDATE backbeat_schedules SET paused = ?, updated_at = ? WHERE name = ?"


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
    found = record(
        conn.execute(f"SELECT {COLUMNS} FROM backbeat_schedules WHERE name = ?", (name,)).fetchone()
    )
    if found.last_tick is not None and found.last_tick >= tick:
        return None
    last_task = found.last_task
    if found.paused:
        note = "paused"
    elif task is not None and skip_if_running and _live(conn, last_task):
        note = STILL_RUNNING
    elif task is not None:
        [written] = insert_groups([[insert_row(task)]], conn)
        if isinstance(written, BaseException):
            raise written
        [last_task] = written
        note = "enqueued"
    conn.execute(
        "UPDATE backbeat_schedules SET rule = ?, last_tick = ?, last_task = ?, note = ?, "
        "updated_at = ? WHERE name = ?",
        (rule, tick, last_task, note, now, name),
    )
    return ScheduleRecord(name, rule, tick, last_task, note, found.paused, now)


def _live(conn: sqlite3.Connection, task_id: str | None) -> bool:
    if task_id is None:
        return False
    found = conn.execute(
        "SELECT 1 FROM backbeat_tasks WHERE id = ? AND state IN ('held', 'pending', 'running')",
        (task_id,),
    ).fetchone()
    return found is not None
