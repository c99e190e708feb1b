"""Live updates: one snapshot loop per dashboard, however many viewers, over a real uvicorn."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import httpx
import pytest

from backbeat.dashboard.events import STREAM_SECONDS
from backbeat.dashboard.snapshot import RUNNING_SHOWN
from backbeat.status import TaskState
from backbeat.stores import SQLiteStore
from backbeat.stores.base import Settlement
from tests.dashboard.conftest import make
from tests.serving import uvicorn

# One snapshot of a store with one queue and no schedules: counts, queues, workers,
# oldest_due, paused_queues, schedules, gate_usage, list_tasks (running).
READS_PER_TICK = 8


class Viewer(threading.Thread):
    """An EventSource's part: reads `/events` and keeps each event's data."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.events: list[dict] = []
        self.stop = threading.Event()
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            with httpx.stream("GET", self.url, timeout=10) as response:
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/event-stream")
                for line in response.iter_lines():
                    if line.startswith("data: "):
                        self.events.append(json.loads(line[6:]))
                    if self.stop.is_set():
                        return
        except BaseException as error:  # said by the test
            self.error = error


def wait_for(condition, timeout: float = 15.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


@pytest.mark.process
@pytest.mark.anyio
async def test_two_viewers_get_the_same_snapshots_from_one_loop(tmp_path: Path):
    store = SQLiteStore(tmp_path / "tasks.db")
    await store.open()
    running = await make(store, "running")
    await make(store, "failed")
    env = {"BACKBEAT_TEST_STORE": f"sqlite:///{tmp_path}/tasks.db", "BACKBEAT_TEST_REFRESH": "0.2"}
    with uvicorn("tests.apps.dashboard_app:app", tmp_path, env=env) as server:
        viewers = [Viewer(f"{server.url}/events") for _ in range(2)]
        for viewer in viewers:
            viewer.start()
        wait_for(lambda: all(len(v.events) >= 4 for v in viewers), what="4 events each")
        # The task reports progress: the next snapshots carry it to both viewers.
        assert await store.progress(f"{running}:1", '{"fraction": 0.5, "message": "half"}')
        wait_for(
            lambda: all(
                v.events[-1]["running"] == [{"id": running, "fraction": 0.5, "message": "half"}]
                for v in viewers
            ),
            what="the progress report",
        )
        for viewer in viewers:
            viewer.stop.set()
        for viewer in viewers:
            assert viewer.error is None, viewer.error
            first, last = viewer.events[0], viewer.events[-1]
            assert first["counts"]["failed"] == 1 and first["counts"]["running"] == 1
            # The store was read once per tick, not once per viewer per tick.
            assert last["tick"] > first["tick"]
            assert last["reads"] - first["reads"] == READS_PER_TICK * (last["tick"] - first["tick"])
        # Both saw the same ticks (one loop), each tick's snapshot once.
        ticks = [[event["tick"] for event in viewer.events] for viewer in viewers]
        for seen in ticks:
            assert seen == sorted(set(seen))
        common = set(ticks[0]) & set(ticks[1])
        assert len(common) >= 3
    await store.close()


@pytest.mark.process
@pytest.mark.anyio
async def test_a_task_pages_stream_follows_its_task_and_ends_when_it_leaves_running(
    tmp_path: Path,
):
    store = SQLiteStore(tmp_path / "tasks.db")
    await store.open()
    # `outside` is older than the RUNNING_SHOWN newest running tasks: not in the snapshot's
    # list, so the stream reads it; `newest` is in the list.
    outside = await make(store, "running")
    for _ in range(RUNNING_SHOWN):
        await make(store, "running")
    newest = await make(store, "running")
    env = {"BACKBEAT_TEST_STORE": f"sqlite:///{tmp_path}/tasks.db", "BACKBEAT_TEST_REFRESH": "0.2"}
    with uvicorn("tests.apps.dashboard_app:app", tmp_path, env=env) as server:
        plain = Viewer(f"{server.url}/events")
        followers = {
            task_id: Viewer(f"{server.url}/events?task={task_id}") for task_id in (outside, newest)
        }
        for viewer in (plain, *followers.values()):
            viewer.start()
        assert await store.progress(f"{outside}:1", '{"fraction": 0.25, "message": "a quarter"}')
        wait_for(
            lambda: (
                bool(followers[outside].events)
                and followers[outside].events[-1]["task"]
                == {"id": outside, "state": "running", "fraction": 0.25, "message": "a quarter"}
            ),
            what="the progress of the task outside the snapshot's list",
        )
        wait_for(lambda: bool(followers[newest].events), what="an event for the newest task")
        assert await store.finish(
            [
                Settlement(f"{newest}:1", TaskState.SUCCEEDED, result='"done"'),
                Settlement(f"{outside}:1", TaskState.FAILED, error="OSError: gone"),
            ]
        ) == [True, True]
        # Each follower's stream ends with the event saying how its task ended (well before
        # STREAM_SECONDS, when every stream ends), and says running until then.
        for task_id, ended in ((newest, "succeeded"), (outside, "failed")):
            viewer = followers[task_id]
            viewer.join(timeout=STREAM_SECONDS / 2)
            assert not viewer.is_alive() and viewer.error is None, viewer.error
            states = [event["task"]["state"] for event in viewer.events]
            assert states[-1] == ended and set(states[:-1]) == {"running"}, states
        # A stream that follows no task goes on, and says nothing of one.
        seen = len(plain.events)
        wait_for(lambda: len(plain.events) > seen, what="the plain stream going on")
        assert all("task" not in event for event in plain.events)
        plain.stop.set()
    await store.close()
