"""engine.connecting: a store that cannot be reached, or not used, at start-up is tried
again; the runner starts once however often it is asked to."""

import asyncio
import threading

import pytest

from backbeat import Runner
from backbeat.engine import connecting
from backbeat.stores import MemoryStore, StoreError, StoreUnavailable
from tests.conftest import recording

pytestmark = pytest.mark.anyio


class Failover(MemoryStore):
    """A real (memory) store whose first opens fail as a Redis failover would: unreachable,
    then reachable but refusing writes (a replica), then fine."""

    def __init__(self) -> None:
        super().__init__()
        self.failures = [
            StoreUnavailable("connection refused"),
            StoreError("READONLY You can't write against a read only replica"),
        ]

    async def open(self) -> None:
        if self.failures:
            raise self.failures.pop(0)


async def test_a_store_that_refuses_after_it_answers_is_tried_again_not_given_up(monkeypatch):
    monkeypatch.setattr(connecting, "FIRST_RETRY_WAIT", 0.01)
    monkeypatch.setattr(connecting, "MAX_RETRY_WAIT", 0.05)
    store = Failover()
    with recording("backbeat") as log:
        async with Runner(store=store) as runner:
            assert not await runner.wait_connected(0)
            assert runner.health().waiting_for_store  # healthy: it retries
            assert await runner.wait_connected(5)
    messages = log.messages(0)
    assert any("unreachable, retrying" in message for message in messages)
    assert any("cannot be used" in message and "READONLY" in message for message in messages)


async def test_a_runner_started_twice_runs_one_worker():
    runner = Runner(store="memory://")
    await runner.start()
    await runner.start()  # the app's lifespan and a middleware's, say
    await runner.drain()
    await asyncio.sleep(0)
    keepers = [t for t in threading.enumerate() if t.name.startswith("backbeat-leases")]
    assert keepers == []
