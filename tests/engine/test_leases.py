"""The lease keeper: which tasks a renewal tells the worker to stop."""

import asyncio
import logging
import threading
import time

import pytest

from backbeat.engine.leases import LeaseKeeper
from backbeat.stores import SQLiteStore
from backbeat.stores.base import WorkerInfo
from tests.stores.rows import new_task, succeeded


@pytest.fixture
def loop():
    own = asyncio.new_event_loop()
    yield own
    own.close()


@pytest.fixture
def store(tmp_path, loop):
    opened = SQLiteStore(tmp_path / "tasks.db")
    yield opened
    loop.run_until_complete(opened.close())


def keeper(store, renewed: list[str], running: list[str], stopped: list[list[str]]) -> LeaseKeeper:
    return LeaseKeeper(
        store,
        "w1",
        30.0,
        receipts=lambda: renewed,
        running=lambda: running,
        stop=stopped.append,
        describe=lambda: "nothing",
        worker_info=lambda: WorkerInfo("w1", "h", 1, None, 1, 1, 0.0),
    )


def test_a_finished_task_whose_outcome_is_not_marked_recorded_is_not_stopped(store, loop, caplog):
    """Its outcome is written (the renewal finds it no longer running) but the worker has
    not marked it recorded yet: still renewed, and no 'lease was lost' to stop it for."""
    loop.run_until_complete(store.enqueue([new_task()]))
    [claim] = loop.run_until_complete(store.claim("w1", limit=1, lease=30))
    loop.run_until_complete(store.finish([succeeded(claim)]))
    stopped: list[list[str]] = []
    with caplog.at_level(logging.WARNING, logger="backbeat"):
        keeper(store, [claim.receipt], [], stopped)._renew(loop, store)
    assert stopped == []
    assert "lease was lost" not in caplog.text


def test_a_running_task_cancelled_in_the_store_is_stopped(store, loop, caplog):
    loop.run_until_complete(store.enqueue([new_task()]))
    [claim] = loop.run_until_complete(store.claim("w1", limit=1, lease=30))
    loop.run_until_complete(store.cancel([claim.id], "not wanted"))
    stopped: list[list[str]] = []
    with caplog.at_level(logging.WARNING, logger="backbeat"):
        keeper(store, [claim.receipt], [claim.receipt], stopped)._renew(loop, store)
    assert stopped == [[claim.id]]
    assert "lease was lost" in caplog.text


class HangingRenewals(SQLiteStore):
    """A real SQLite store whose renewals hang a while, as over a link that was cut."""

    async def renew(self, receipts, lease):
        await asyncio.sleep(1.5)
        return await super().renew(receipts, lease)


def test_a_keeper_stuck_in_a_renewal_does_not_call_the_free_loop_blocked(tmp_path, caplog):
    """The keeper asks the loop to answer each tick; while it waits on the store it asks
    nothing, and that wait is not the loop's (it once said "blocked for 7.9s" there)."""
    store = HangingRenewals(tmp_path / "tasks.db")
    worker_loop = asyncio.new_event_loop()
    thread = threading.Thread(target=worker_loop.run_forever, daemon=True)
    thread.start()
    lease_keeper = LeaseKeeper(
        store,
        "w1",
        1.2,  # answer within 0.4 s, renew every 0.4 s
        receipts=lambda: ["01ABC:1"],
        running=lambda: ["01ABC:1"],
        stop=lambda ids: None,
        describe=lambda: "nothing",
        worker_info=lambda: WorkerInfo("w1", "h", 1, None, 1, 1, 0.0),
    )
    try:
        with caplog.at_level(logging.WARNING, logger="backbeat"):
            lease_keeper.start(worker_loop)
            deadline = time.monotonic() + 4
            while time.monotonic() < deadline:
                assert lease_keeper.loop_blocked(time.monotonic()) < 1.0
                time.sleep(0.05)
    finally:
        lease_keeper.stop()
        worker_loop.call_soon_threadsafe(worker_loop.stop)
        thread.join(timeout=5)
        worker_loop.close()
        asyncio.run(store.close())
    assert "blocked" not in caplog.text
