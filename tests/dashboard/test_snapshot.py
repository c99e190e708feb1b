"""The snapshot loop (started by the first viewer, stopped after the last, each viewer
holding only the latest) and the history behind the charts."""

from __future__ import annotations

import asyncio
import re

import pytest

from backbeat.dashboard import dashboard
from backbeat.dashboard.snapshot import History, Snapshot
from backbeat.stores import open_store
from tests.dashboard.conftest import client, make

pytestmark = pytest.mark.anyio


def snapshot(at: float, **counts: int) -> Snapshot:
    return Snapshot(at, counts, {}, 0, [], None, [], [], [], [])


def test_throughput_and_failure_rate_come_from_count_deltas():
    history = History()
    history.add(snapshot(100.0, succeeded=10, failed=0), snapshot(102.0, succeeded=16, failed=2))
    assert history.throughput() == [4.0]  # 8 finished in 2 s
    assert history.failure_rate() == [0.25]
    assert not history.lower_bound()


def test_a_purge_makes_a_lower_bound_never_a_negative_rate():
    history = History()
    history.add(snapshot(200.0, succeeded=500, failed=3), snapshot(201.0, succeeded=2, failed=4))
    assert history.throughput() == [1.0]  # only the failed one is known to have finished
    assert history.lower_bound()


def test_history_is_bounded():
    history = History()
    for n in range(1000):
        history.add(snapshot(n * 10.0, succeeded=n), snapshot(n * 10.0 + 5, succeeded=n + 1))
    assert len(history.buckets) == 360


async def tick_of(viewer) -> int:
    snapshot = await viewer.next()
    assert snapshot is not None
    return snapshot.tick


async def test_closing_the_dashboard_ends_every_stream(store):
    app = dashboard(store, refresh=0.1)
    viewers = [app.hub.subscribe() for _ in range(2)]
    await tick_of(viewers[0])
    await app.close()
    assert [await viewer.next() for viewer in viewers] == [None, None]


async def test_one_loop_for_every_viewer_started_and_stopped_by_them(store):
    await make(store, "pending")
    app = dashboard(store, refresh=0.1)
    hub = app.hub
    viewers = [hub.subscribe() for _ in range(5)]
    seen = [[await tick_of(viewer) for _ in range(3)] for viewer in viewers]
    assert all(ticks == sorted(set(ticks)) for ticks in seen)
    # Ticks of one loop, not five: the reads are one snapshot's per tick.
    latest = hub.latest
    assert latest is not None and latest.reads == 8 * latest.tick
    for viewer in viewers:
        hub.unsubscribe(viewer)
    assert hub.viewers == 0 and hub._loop_task is None
    reads = app.source.reads
    await asyncio.sleep(0)  # the cancelled loop ends on the loop's next turn
    assert app.source.reads == reads


async def test_a_slow_viewer_holds_only_the_latest_snapshot(store):
    app = dashboard(store, refresh=0.1)
    fast, slow = app.hub.subscribe(), app.hub.subscribe()
    for _ in range(4):
        await fast.next()
    latest = await slow.next()  # what it gets is the newest, not the first of a queue
    assert latest is not None and latest.tick >= 4
    app.hub.unsubscribe(fast)
    app.hub.unsubscribe(slow)


async def test_a_recent_snapshot_is_shown_at_once_while_a_new_one_is_read(store):
    now = [1000.0]
    app = dashboard(store, refresh=1.0)
    hub = app.hub
    hub.clock = lambda: now[0]
    first = await hub.current()
    await make(store, "failed")
    now[0] += 2.0  # two refreshes old: shown as it is, a new one read behind it
    assert await hub.current() is first
    newer = await hub.read()  # the read that page started, not one more
    assert newer.tick == first.tick + 1 and newer.counts["failed"] == 1
    assert await hub.current() is newer
    now[0] += 60.0  # long stale: the page waits for a new one
    assert (await hub.current()).tick == newer.tick + 1
    await make(store, "failed")
    hub.outdated()  # an action: the page waits for a new one too
    latest = await hub.current()
    assert latest.tick == newer.tick + 2 and latest.counts["failed"] == 2
    await app.close()


async def test_a_store_that_cannot_be_read_is_said_on_the_page(tmp_path):
    app = dashboard(f"sqlite:///{tmp_path}/missing.db")
    async with client(app) as http:
        overview = await http.get("/")
        assert overview.status_code == 200
        assert "Reading the store failed" in overview.text and "missing.db" in overview.text
        tasks = await http.get("/tasks")
        assert tasks.status_code == 503 and "cannot be read" in tasks.text
    # Once there is a store there, the same app reads it.
    created = open_store(f"sqlite:///{tmp_path}/missing.db")
    await make(created, "failed")
    await created.close()
    async with client(app) as http:
        assert "ValueError" in (await http.get("/failures")).text
    await app.close()


def test_latency_is_enqueue_to_start_of_the_tasks_seen_starting():
    from backbeat.stores.base import StoredStatus

    def running(task_id: str, due: float, started: float) -> StoredStatus:
        return StoredStatus(task_id, "n", "running", 1, None, None, due, started, None, due)

    history = History()
    before = snapshot(1000.0)
    after = snapshot(1001.0)
    after.running = [
        running("A", due=998.0, started=1000.5),  # waited 2.5 s
        running("B", due=1000.2, started=1000.7),  # waited 0.5 s
        running("C", due=900.0, started=999.0),  # started before: seen already
    ]
    history.add(before, after)
    assert history.latency() == pytest.approx(1.5)


async def test_the_overview_shows_the_oldest_wait_and_the_workers(store):
    from backbeat.stores.base import WorkerInfo

    await make(store, "pending")
    worker = WorkerInfo("h:1:x", "h", 1, None, 8, 0, 0.0)
    await store.heartbeat(worker, 30)
    async with client(dashboard(store)) as http:
        page = (await http.get("/")).text
    assert 'data-fact="workers">1 (8 slots)<' in page
    assert re.search(r'data-fact="oldest">\d+s<', page)
