"""Waiting for a task's result: its status, looked at until the task has finished.

Either feeder answers for a status (`Engine.get`, `Engine.aget`); a look costs a dict
lookup in process and a read with a store, hence each engine's ``status_poll``.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from backbeat.concurrency import in_event_loop
from backbeat.engine.protocol import Engine
from backbeat.status import FINISHED, TaskInfo, value_of


async def wait_for_result(engine: Engine, task_id: str, timeout: float | None) -> Any:  # noqa: ASYNC109
    async with asyncio.timeout(timeout):
        while True:
            info = _known(task_id, await engine.aget(task_id))
            if info.state in FINISHED:
                return value_of(info)
            await asyncio.sleep(engine.status_poll)


def wait_for_result_blocking(engine: Engine, task_id: str, timeout: float | None) -> Any:
    """`wait_for_result` for code without an event loop (a script, another thread)."""
    deadline = None if timeout is None else time.monotonic() + timeout
    while True:
        info = _known(task_id, engine.get(task_id))
        if info.state in FINISHED:
            return value_of(info)
        if in_event_loop():
            raise RuntimeError(
                "waiting here would block the event loop: use `await runner.aresult(id)`"
            )
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"task {task_id} did not finish within {timeout}s")
        time.sleep(0.05)


def _known(task_id: str, info: TaskInfo | None) -> TaskInfo:
    if info is None:
        raise LookupError(f"no task with id {task_id}")
    return info
