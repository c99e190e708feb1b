"""Redis entries changed or removed outside backbeat (an operator's HSET or DEL, a tool
writing its own bytes): as on SQLite, one unreadable task is dead-lettered at once with an
error that says so, and nothing else stops; a deleted stream or group is made again.
The real Redis server, a fresh prefix per test, real runners."""

import pickle
import uuid
from decimal import Decimal

import anyio
import pytest

from backbeat import BackgroundTask
from tests.apps import durable_tasks
from tests.redis_server import forget, fresh_prefix_url, raw_client

pytestmark = [pytest.mark.anyio, pytest.mark.redis]


@pytest.fixture
def url(redis_server):
    made = fresh_prefix_url(redis_server)
    yield made
    forget(made)


def _key(url: str, rest: str) -> str:
    return "{" + url.rpartition("prefix=")[2] + "}:" + rest


def _record(label: str) -> BackgroundTask:
    return BackgroundTask(durable_tasks.record, label, Decimal(1), uuid.uuid4())


# What was done to the first of three tasks claimed in one batch.
DAMAGE = {
    "attempts": lambda client, key: client.hset(key, "attempts", "many"),
    "queue": lambda client, key: client.hdel(key, "queue"),
    "created_at": lambda client, key: client.hset(key, "created_at", "yesterday"),
    "payload": lambda client, key: client.hset(key, "payload", pickle.dumps({"args": [1]})),
}


@pytest.mark.parametrize("field", sorted(DAMAGE))
async def test_an_unreadable_task_is_dead_lettered_at_once_and_its_batch_runs(
    url, field, backbeat_log
):
    async with durable_tasks.runner(url, execute=False) as writer:
        bad = await writer.asubmit(_record("bad"))
        good = [await writer.asubmit(_record(f"good{n}")) for n in range(2)]
    client = raw_client(url)
    try:
        DAMAGE[field](client, _key(url, f"t:{bad}"))
    finally:
        client.close()
    durable_tasks.calls.clear()
    async with durable_tasks.runner(url, poll_interval=0.05, lease=30) as runner:
        await runner.join(timeout=5)  # no lease runs out first: a lost lease takes 30 s here
        states = [(await runner.aget(task_id)).state for task_id in good]
        info = await runner.aget(bad)  # what the status route shows: no 500
    assert states == ["succeeded", "succeeded"]
    assert sorted(label for label, _ in durable_tasks.calls) == ["good0", "good1"]
    assert info.state == "failed" and info.attempts <= 1
    assert f"cannot be read: field {field}" in info.error
    assert "died or hung" not in info.error
    assert any(bad in m and "cannot be read" in m for m in backbeat_log.messages())


async def test_a_running_task_whose_record_is_deleted_strands_nothing(url, backbeat_log):
    async with durable_tasks.runner(url, poll_interval=0.05, lease=0.6) as runner:
        gone = await runner.asubmit(BackgroundTask(durable_tasks.sleep_and_mark, 30, "gone"))
        with anyio.fail_after(5):
            while (await runner.aget(gone)).state != "running":  # noqa: ASYNC110 - a store
                await anyio.sleep(0.02)
        client = raw_client(url)
        try:
            client.delete(_key(url, f"t:{gone}"))
        finally:
            client.close()
        durable_tasks.calls.clear()
        later = [await runner.asubmit(_record(f"later{n}")) for n in range(20)]
        await runner.join(timeout=10)
        states = {(await runner.aget(task_id)).state for task_id in later}
    assert states == {"succeeded"}
    assert len(durable_tasks.calls) == 20
    assert any(gone in m and "was deleted" in m for m in backbeat_log.messages())


async def test_a_deleted_stream_is_made_again_and_its_tasks_run(url):
    async with durable_tasks.runner(url, execute=False) as writer:
        before = [await writer.asubmit(_record(f"before{n}")) for n in range(3)]
        client = raw_client(url)
        try:
            assert client.delete(_key(url, "x:default:0")) == 1
        finally:
            client.close()
        after = [await writer.asubmit(_record(f"after{n}")) for n in range(20)]
    durable_tasks.calls.clear()
    async with durable_tasks.runner(url, poll_interval=0.05) as runner:
        await runner.join(timeout=10)
        states = {(await runner.aget(task_id)).state for task_id in before + after}
    assert states == {"succeeded"}
    assert len(durable_tasks.calls) == 23  # the 3 whose entries went with the stream too


async def test_a_task_whose_limits_cannot_be_read_is_dead_lettered_and_nothing_else_stops(url):
    from backbeat.stores import open_store
    from tests.stores.rows import new_task

    store = open_store(url)
    await store.open()
    try:
        bad = new_task(rate_gate='["rate", "x"]', rate_limit=5, rate_window=1.0)
        gated = new_task(concurrency_gate='["concurrency", "y"]', max_concurrency=1)
        plain = new_task()
        await store.enqueue([bad, gated, plain])
        client = raw_client(url)
        try:
            client.hset(_key(url, f"t:{bad.id}"), "rlimit", "lots")
        finally:
            client.close()
        claimed = {c.id for c in await store.claim("w", limit=10, lease=30)}
        claimed |= {c.id for c in await store.claim("w", limit=10, lease=30)}
        assert claimed == {gated.id, plain.id}
        status = await store.get(bad.id)
        assert status.state == "failed"
        assert "field rlimit/rwindow is missing or malformed" in status.error
    finally:
        await store.close()
